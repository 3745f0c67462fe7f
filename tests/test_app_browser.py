"""The app's pages in real headless Chromium (Debian's chromium + chromium-driver, selenium),
against ``xred app`` started as a user would: upload scikit-image's chelsea photo on Explain and
see "Egyptian cat" in the top-5 with two maps drawn; PGD at ε = 0.01 on Attack changes the
prediction; Compare shows a fooled model's Grad-CAM differ from the original's while the
prediction stays; a text file gets a readable error. Screenshots go to runs/app-screenshots/."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from process_helpers import free_port

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (make test installs them as root)")

SHOTS = ROOT / "runs" / "app-screenshots"
WAIT = 120  # seconds for one page action on a busy 2-core machine


@pytest.fixture(scope="module")
def fooled(tmp_path_factory) -> Path:
    """A cheaply fooled fmnist-vgg (Heo et al.'s Location fooling of Grad-CAM, 30 steps on 256
    training images; about 25 s here)."""
    out = tmp_path_factory.mktemp("app") / "fooled-vgg"
    cmd = [sys.executable, "-m", "xred", "fool", "--model", "fmnist-vgg", "--fooling",
           "location", "--explainer", "gradcam", "--limit", "256", "--steps", "30", "--lam",
           "10", "--lr", "0.001", "--eval-limit", "32", "--eval-explainers", "gradcam",
           "--out", str(out), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def server(fooled):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([sys.executable, "-m", "xred", "app", "--port", str(port),
                             "--models", str(fooled)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"xred app: {url}"), first
        end = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "api/status", timeout=2) as r:
                    assert json.load(r) == {"busy": False}
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < end, proc.stdout.read()
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def _open(driver, url: str, page: str) -> None:
    driver.get(f"{url}#{page}")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.ready === '1'"))


def _drawn(driver, page: str) -> int:
    return len(driver.find_elements("css selector", f"#{page}-maps canvas[data-drawn='1']"))


def _error(driver, page: str) -> str:
    box = driver.find_element("css selector", f"#{page}-error")
    return box.text if box.is_displayed() else ""


def _shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def _chelsea_file(tmp_path: Path) -> Path:
    from PIL import Image
    from skimage import data

    path = tmp_path / "chelsea.png"
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def test_explain_upload_shows_egyptian_cat_and_two_maps(server, browser, tmp_path):
    _open(browser, server, "explain")
    browser.find_element("css selector", "#explain-model option[value='efficientnet-lite0']")
    chooser = browser.find_element("css selector",
                                   ".image-picker[data-page='explain'] .file-input")
    chooser.send_keys(str(_chelsea_file(tmp_path)))
    _wait(browser, lambda d: d.execute_script(
        "return document.querySelector('.image-picker[data-page=explain] .sample-select')"
        ".value.startsWith('upload:')"))
    checked = [e.get_attribute("value") for e in
               browser.find_elements("css selector", "#explain-methods input:checked")]
    assert checked == ["gradcam", "gradient"]
    browser.find_element("id", "explain-run").click()
    _wait(browser, lambda d: _drawn(d, "explain") >= 2 or _error(d, "explain"))
    assert not _error(browser, "explain")
    top = [li.text for li in browser.find_elements("css selector", "#explain-top li")]
    assert len(top) == 5 and any(t.startswith("Egyptian cat") for t in top), top
    assert _drawn(browser, "explain") == 2
    # the opacity slider reaches the maps
    browser.execute_script("const s = document.getElementById('explain-opacity');"
                           "s.value = 0.3; s.dispatchEvent(new Event('input'));")
    assert browser.find_element("css selector", "#explain-maps canvas") \
        .value_of_css_property("opacity") == "0.3"
    browser.execute_script("const s = document.getElementById('explain-opacity');"
                           "s.value = 0.6; s.dispatchEvent(new Event('input'));")
    _shot(browser, "explain")


def test_explain_text_file_gets_a_message(server, browser, tmp_path):
    _open(browser, server, "explain")
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n")
    browser.find_element("css selector", ".image-picker[data-page='explain'] .file-input") \
        .send_keys(str(bad))
    _wait(browser, lambda d: _error(d, "explain"))
    text = _error(browser, "explain")
    assert text.startswith("(400) cannot read 'notes.txt' as an image"), text


def test_explain_drop_uploads_the_file(server, browser):
    """A file dropped on the drop zone is uploaded and shown as the model sees it."""
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    _open(browser, server, "explain")
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "red.png", {type: "image/png"}));
        const zone = document.querySelector(".image-picker[data-page=explain] .drop");
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true,
                                                  cancelable: true}));
    """, base64.b64encode(buf.getvalue()).decode())
    select = "document.querySelector('.image-picker[data-page=explain] .sample-select')"
    # wait for this upload by its name: an earlier test's upload (chelsea.png) may already be
    # selected, so "some upload is selected" can hold before this one has arrived
    shown = f"return {select}.selectedOptions[0]?.textContent"
    _wait(browser, lambda d: d.execute_script(shown) == "upload: red.png")
    assert browser.execute_script(shown) == "upload: red.png"
    assert browser.execute_script(f"return {select}.value").startswith("upload:")
    _wait(browser, lambda d: d.execute_script(
        "const i = document.getElementById('explain-view');"
        "return i.complete && i.naturalWidth === 224 && i.src.startsWith('data:image/png');"))


def test_attack_pgd_changes_the_prediction(server, browser):
    from selenium.webdriver.support.ui import Select

    _open(browser, server, "attack")
    Select(browser.find_element("id", "attack-model")).select_by_value("efficientnet-lite0")
    picker = browser.find_element("css selector", ".image-picker[data-page='attack'] select")
    _wait(browser, lambda d: picker.find_elements("css selector", "option[value='photo:chelsea']"))
    Select(picker).select_by_value("photo:chelsea")
    Select(browser.find_element("id", "attack-name")).select_by_value("pgd")
    browser.execute_script("const s = document.getElementById('attack-eps');"
                           "s.value = 0.01; s.dispatchEvent(new Event('input'));")
    assert browser.find_element("id", "attack-eps-value").text == "0.010"
    browser.find_element("id", "attack-run").click()
    _wait(browser, lambda d: d.find_element("id", "attack-verdict").get_attribute(
        "data-changed") is not None or _error(d, "attack"))
    assert not _error(browser, "attack")
    verdict = browser.find_element("id", "attack-verdict")
    assert verdict.get_attribute("data-changed") == "1", verdict.text
    before = browser.find_elements("css selector", "#attack-before li")[0].text
    after = browser.find_elements("css selector", "#attack-after li")[0].text
    assert before.startswith("Egyptian cat") and not after.startswith("Egyptian cat")
    assert _drawn(browser, "attack") == 2
    cells = {td.get_attribute("data-metric") for td in
             browser.find_elements("css selector", "#attack-metrics td.num")}
    assert cells == {"l1", "kendall_tau", "topk_intersection"}
    _shot(browser, "attack")


def test_compare_fooled_model_map_differs(server, browser):
    _open(browser, server, "compare")
    assert browser.find_element("id", "compare-model").get_attribute("value") == "fmnist-vgg"
    assert browser.find_element("id", "compare-other").get_attribute("value") == "fooled-vgg"
    browser.find_element("id", "compare-run").click()
    _wait(browser, lambda d: _drawn(d, "compare") >= 2 or _error(d, "compare"))
    assert not _error(browser, "compare")
    assert browser.find_element("id", "compare-verdict").text.startswith("same prediction")

    def metric(name: str) -> float:
        return float(browser.find_element(
            "css selector", f"#compare-metrics td[data-metric='{name}']").text)

    # measured here: L1 0.36, Kendall τ −0.44, top-10 % intersection 0.00 on test image 0
    assert metric("l1") > 0.2 and metric("topk_intersection") < 0.5, \
        (metric("l1"), metric("topk_intersection"))
    _shot(browser, "compare")


def test_pathways_graph_has_every_role(server, browser):
    """Bluff's graph for fmnist-vgg, Sneaker -> Sandal (PGD, 100 images per class): nodes of
    every role drawn; a click on a driving channel shows its activation against strength."""
    from selenium.webdriver.support.ui import Select

    _open(browser, server, "pathways")
    _wait(browser, lambda d: Select(d.find_element("id", "pathways-benign"))
          .first_selected_option.text == "Sneaker")
    count = browser.find_element("id", "pathways-count")
    count.clear()
    count.send_keys("100")
    browser.find_element("id", "pathways-run").click()

    def done(d):
        assert not _error(d, "pathways"), _error(d, "pathways")
        return d.execute_script("return document.getElementById('pathways-results')"
                                ".dataset.done === '1'")
    _wait(browser, done, timeout=300)
    roles = browser.execute_script("return [...document.querySelectorAll("
                                   "'#pathways-panel-a g.node')].map(n => n.dataset.role)")
    # measured here: 63 unchanged, 25 other, 7 suppressed, 7 excited, 1 exploited
    assert set(roles) == {"suppressed_benign", "excited_target", "exploited", "unchanged",
                          "other"}, roles
    node = browser.find_element("css selector", "#pathways-panel-a g.node[data-role="
                                "'excited_target'], #pathways-panel-a g.node[data-role="
                                "'exploited']")
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', "
                           "{bubbles: true}))", node)
    _wait(browser, lambda d: d.find_element("id", "pathways-node").get_attribute("data-node"))
    assert browser.find_elements("css selector", "#pathways-node svg.activation-chart path")
    _shot(browser, "pathways")


def test_api_page_works_offline(server, browser):
    browser.get(f"{server}docs")
    _wait(browser, lambda d: len(d.find_elements("css selector", ".swagger-ui .opblock")) >= 10)
    assert "/api/explain" in browser.find_element("css selector", ".swagger-ui").text
    _shot(browser, "api")
