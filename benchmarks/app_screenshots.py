"""The README's screenshots of the web app (docs/app-*.png), taken in headless Chromium.

Starts ``xred app`` on a free localhost port with the model folders given (e.g. the output of
``xred fool``), then on each page does what a person would: Explain the uploaded chelsea photo
with EfficientNet-Lite0 (Grad-CAM, Gradient, LRP); Attack it with PGD at ε = 0.01; Compare
fmnist-vgg with the first model folder on a Fashion-MNIST image (Grad-CAM, LRP); Pathways of
fmnist-vgg from Sneaker to Sandal (PGD compared with FGSM, 200 images per class), with the first
driving channel's patches shown.

    python benchmarks/app_screenshots.py --models runs/app-models/fmnist-vgg-location-fooled
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from app_server import ROOT, Server, photo_png
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900", "--hide-scrollbars"]


def ready(driver, results: str):
    def check(d):
        err = d.find_element(By.ID, "error")
        if err.is_displayed():
            raise RuntimeError(f"the page shows an error: {err.text}")
        return d.execute_script(f"return document.getElementById('{results}').dataset.done")
    WebDriverWait(driver, 300, poll_frequency=0.2).until(check)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="model folders (first: Compare)")
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args()
    out = Path(args.out)
    folder = f"folder:{Path(args.models[0]).name}"
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        opts.add_argument(flag)
    with Server("--models", *args.models) as server, tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "chelsea.png"
        photo.write_bytes(photo_png())
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        d.set_window_size(1400, 900)
        try:
            def page(name: str) -> None:
                d.get(f"{server.url}/#{name}")
                WebDriverWait(d, 60).until(lambda d: d.execute_script(
                    "return document.body.dataset.ready"))

            def shot(name: str) -> None:
                d.execute_script("window.scrollTo(0, 0)")
                path = out / f"app-{name}.png"
                d.save_screenshot(str(path))
                Image.open(path).convert("RGB").save(path, optimize=True)

            def methods(fieldset: str, names: list[str]) -> None:
                for box in d.find_elements(By.CSS_SELECTOR, f"#{fieldset} input"):
                    if box.is_selected() != (box.get_attribute("value") in names):
                        box.click()

            page("explain")
            d.find_element(By.CSS_SELECTOR, "#explain-picker .file-input").send_keys(str(photo))
            WebDriverWait(d, 60).until(lambda d: d.execute_script(
                "return document.querySelector('#explain-picker .sample-select').value")
                .startswith("u:"))
            methods("explain-methods", ["gradcam", "gradient", "lrp"])
            d.find_element(By.ID, "explain-run").click()
            ready(d, "explain-results")
            shot("explain")

            page("attack")
            d.execute_script("const e = document.getElementById('attack-eps'); e.value = '0.01';"
                             "e.dispatchEvent(new Event('input'));")
            d.find_element(By.ID, "attack-run").click()
            ready(d, "attack-results")
            d.set_window_size(1400, 1100)
            shot("attack")
            d.set_window_size(1400, 900)

            page("compare")
            Select(d.find_element(By.ID, "compare-original")).select_by_value("fmnist-vgg")
            Select(d.find_element(By.ID, "compare-other")).select_by_value(folder)
            methods("compare-methods", ["gradcam", "lrp"])
            d.find_element(By.ID, "compare-run").click()
            ready(d, "compare-results")
            shot("compare")

            page("pathways")
            Select(d.find_element(By.ID, "pathways-attack-b")).select_by_value("fgsm")
            d.find_element(By.ID, "pathways-run").click()
            ready(d, "pathways-results")
            d.execute_script("""
                const res = state.pathways.a, ids = Object.keys(res.patches);
                const n = res.graph.nodes.find(n => n.id === ids[0]);
                showNode(res, n);""")
            d.set_window_size(1400, 1900)  # both panels and the comparison table
            shot("pathways")
        finally:
            d.quit()
    names = ("explain", "attack", "compare", "pathways")
    print("screenshots:", ", ".join(str(out / f"app-{n}.png") for n in names))


if __name__ == "__main__":
    main()
