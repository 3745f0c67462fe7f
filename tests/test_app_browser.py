"""The web app in real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) against a live uvicorn server: Explain, Attack and Compare used as a person would,
with a screenshot of each page under runs/app-screens/."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from app_helpers import photo_bytes, tampered_folder  # noqa: E402
from xred.app import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "runs" / "app-screens"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# what this machine needs: no sandbox as root, no GPU, and no background connections (the
# network is closed; Chromium would otherwise keep trying)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]

pytestmark = pytest.mark.slow  # about 45 s: a live server, Chromium and three models

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("needs Debian's chromium and chromium-driver (make test installs them as root)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live server on a free localhost port with a fooled model folder."""
    models = tmp_path_factory.mktemp("app-browser-models")
    tampered_folder(models)
    app = create_app([str(models)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)
    app.state.runner.close()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def open_page(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return document.body.dataset.ready"))


def wait_done(driver, results_id: str, timeout: float = 120) -> None:
    """Until the page marks its results drawn; an error box on the page fails the test."""
    def ready(d):
        err = d.find_element(By.ID, "error")
        if err.is_displayed():
            raise AssertionError(f"the page shows an error: {err.text}")
        return d.execute_script(f"return document.getElementById('{results_id}').dataset.done")
    WebDriverWait(driver, timeout, poll_frequency=0.2).until(ready)


def drawn_maps(driver, container: str) -> list[float]:
    """Per map canvas in ``container``: the spread (std) of its pixels (0 for a blank one)."""
    return driver.execute_script("""
        return [...document.querySelectorAll(arguments[0] + ' canvas.map-canvas')].map(c => {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let s = 0, s2 = 0, n = d.length / 4;
          for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i+1] + d[i+2]) / 3;
                                                  s += v; s2 += v * v; }
          return Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2));
        });""", container)


def test_explain_attack_compare_pages(server, browser, tmp_path):
    photo = tmp_path / "chelsea.png"
    photo.write_bytes(photo_bytes())

    # Explain: upload the photo with the file chooser, two maps (Grad-CAM, Gradient) drawn
    open_page(browser, server + "#explain")
    Select(browser.find_element(By.ID, "explain-model")).select_by_value("efficientnet-lite0")
    browser.find_element(By.CSS_SELECTOR, "#explain-picker .file-input").send_keys(str(photo))
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "const s = document.querySelector('#explain-picker .sample-select');"
        "return s.selectedIndex >= 0 && s.options[s.selectedIndex].text")
        == "upload: chelsea.png")
    browser.find_element(By.ID, "explain-run").click()
    wait_done(browser, "explain-results")
    top = browser.find_elements(By.CSS_SELECTOR, "#explain-top text.class-name")
    assert "Egyptian cat" in [t.text for t in top]
    spreads = drawn_maps(browser, "#explain-maps")
    assert len(spreads) == 2 and min(spreads) > 5, spreads
    browser.save_screenshot(str(SHOTS / "explain.png"))

    # Attack: PGD at eps = 0.01 on the same photo changes the prediction
    open_page(browser, server + "#attack")
    Select(browser.find_element(By.ID, "attack-model")).select_by_value("efficientnet-lite0")
    Select(browser.find_element(By.CSS_SELECTOR, "#attack-picker .sample-select")) \
        .select_by_value("photo:chelsea")
    Select(browser.find_element(By.ID, "attack-name")).select_by_value("pgd")
    browser.execute_script("const e = document.getElementById('attack-eps'); e.value = '0.01';"
                           "e.dispatchEvent(new Event('input'));")
    assert browser.find_element(By.ID, "attack-eps-value").text.startswith("0.010")
    browser.find_element(By.ID, "attack-run").click()
    wait_done(browser, "attack-results")
    verdict = browser.find_element(By.ID, "attack-verdict").text
    before = browser.find_elements(By.CSS_SELECTOR, "#attack-top-before text.class-name")[0].text
    after = browser.find_elements(By.CSS_SELECTOR, "#attack-top-after text.class-name")[0].text
    assert verdict.startswith("Prediction changed") and before != after, (verdict, before, after)
    assert len(drawn_maps(browser, "#attack-maps")) == 2
    browser.save_screenshot(str(SHOTS / "attack.png"))

    # a long attack shows its progress and stops when cancelled
    Select(browser.find_element(By.ID, "attack-model")).select_by_value("fmnist-vgg")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return document.querySelector('#attack-picker .sample-select').value")
        == "fashion-mnist:0")
    browser.find_element(By.ID, "attack-steps").send_keys("2000")
    browser.find_element(By.ID, "attack-run").click()
    progress = browser.find_element(By.ID, "attack-progress")
    WebDriverWait(browser, 60, poll_frequency=0.1).until(
        lambda d: 0 < float(progress.get_attribute("value")) < 1)
    assert "model pass" in browser.find_element(By.ID, "attack-message").text
    browser.find_element(By.ID, "attack-cancel").click()
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "attack-message").text == "cancelled")

    # Compare: the fooled model predicts the same, its Grad-CAM differs
    open_page(browser, server + "#compare")
    Select(browser.find_element(By.ID, "compare-original")).select_by_value("fmnist-vgg")
    Select(browser.find_element(By.ID, "compare-other")).select_by_value(
        "folder:fmnist-vgg-fooled")
    browser.find_element(By.ID, "compare-run").click()
    wait_done(browser, "compare-results")
    assert browser.find_element(By.ID, "compare-verdict").text.startswith("Same prediction")
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#compare-metrics td")]
    assert cells[0] == "Grad-CAM" and float(cells[1]) > 0.1, cells  # L1 between the maps
    pixels = browser.execute_script("""
        return [...document.querySelectorAll('#compare-maps canvas.map-canvas')].map(c =>
          Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data));""")
    assert len(pixels) == 2
    diff = sum(abs(a - b) for a, b in zip(pixels[0], pixels[1], strict=True)) / len(pixels[0])
    assert diff > 5, diff  # the two drawn maps differ on the page
    browser.save_screenshot(str(SHOTS / "compare.png"))

    # Pathways: Bluff's graph with nodes of every role; a channel's patches and curve
    open_page(browser, server + "#pathways")
    count = browser.find_element(By.ID, "pathways-count")
    count.clear()
    count.send_keys("100")
    browser.find_element(By.ID, "pathways-run").click()
    wait_done(browser, "pathways-results", timeout=300)
    roles = browser.execute_script("return [...document.querySelectorAll("
                                   "'#pathways-panel-a g.node')].map(n => n.dataset.role)")
    assert set(roles) == {"suppressed_benign", "excited_target", "exploited", "unchanged",
                          "other"}, roles
    driving = browser.find_element(By.CSS_SELECTOR, "#pathways-panel-a g.node[data-role="
                                   "'excited_target'], #pathways-panel-a g.node[data-role="
                                   "'exploited']")
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', "
                           "{bubbles: true}))", driving)
    detail = browser.find_element(By.ID, "pathways-node")
    WebDriverWait(browser, 10).until(lambda d: detail.get_attribute("data-node"))
    assert detail.find_elements(By.CSS_SELECTOR, "svg.activation-chart path")
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(SHOTS / "pathways.png"))


def test_api_page_offline(server, browser):
    browser.get(server + "docs")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock")) >= 10)
    assert "/api/explain" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui").text
    browser.save_screenshot(str(SHOTS / "api.png"))


def test_drop_an_image(server, browser):
    """Drag and drop: a PNG file dropped on the picker is uploaded and picked."""
    open_page(browser, server + "#explain")
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/images/photo:coffee?model=efficientnet-lite0').then(r => r.blob()).then(b => {
          const dt = new DataTransfer();
          dt.items.add(new File([b], 'dropped.png', {type: 'image/png'}));
          document.querySelector('#explain-picker .drop').dispatchEvent(
            new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
          done();
        });""")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const s = document.querySelector('#explain-picker .sample-select');"
        "return s.selectedIndex >= 0 && s.options[s.selectedIndex].text") == "upload: dropped.png")


def test_bad_upload_shows_message(server, browser, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    open_page(browser, server + "#explain")
    browser.find_element(By.CSS_SELECTOR, "#explain-picker .file-input").send_keys(str(bad))
    err = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 30).until(lambda d: err.is_displayed())
    assert "cannot read notes.png" in err.text and "Traceback" not in err.text
    browser.save_screenshot(str(SHOTS / "error.png"))
