"""What a person sees: the HTML report and the running optuna-dashboard in headless Chromium
(Debian's chromium + chromium-driver, driven by selenium), with screenshots written as test
artifacts to $SPECOPT_TEST_ARTIFACTS (default tests/artifacts/). The browser cannot resolve any
host name, so the report must draw its figures offline. Without Chromium these tests fail and
say how to install it; they never skip."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")
INSTALL = ("headless Chromium is needed for the browser tests: install Debian's packages with "
           "`apt-get update && apt-get install -y chromium chromium-driver` (bash .ci/run does "
           "this), and selenium with `pip install -e '.[test]'`")


def _which(names) -> str | None:
    for n in names:
        found = shutil.which(n) or (n if os.path.isfile(n) and os.access(n, os.X_OK) else None)
        if found:
            return found
    return None


def artifacts_dir() -> Path:
    d = Path(os.environ.get("SPECOPT_TEST_ARTIFACTS")
             or Path(__file__).resolve().parents[1] / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = _which(CHROMIUM), _which(CHROMEDRIVER)
    if chromium is None or driver_path is None:
        missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver_path))
                   if p is None]
        pytest.fail(f"{INSTALL} (missing: {', '.join(missing)})")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(INSTALL)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1000",
                 # no DNS but localhost: a page that needs a CDN cannot draw
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout: float = 45.0, what: str = "condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(
        lambda d: condition(d), message=f"timed out waiting for {what}")


def _full_page_screenshot(driver, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(int(height), 800), 12000))
    time.sleep(0.5)
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)


def test_html_report_in_chromium(browser, report_study, tmp_path):
    from selenium.webdriver.common.by import By

    study = report_study.load()
    paths = write_report(study, tmp_path / "report", report_study.artifacts)
    browser.get(paths.html.as_uri())
    plots = browser.find_elements(By.CSS_SELECTOR, "div.plot")
    assert len(plots) >= 7
    _wait(browser, lambda d: all(p.get_attribute("data-rendered") for p in plots),
          what="every figure to be drawn")
    failed = [p.get_attribute("id") for p in plots if p.get_attribute("data-rendered") != "true"]
    assert not failed, f"figures not drawn: {failed}"
    for p in plots:  # plotly drew an SVG with something in it
        svg = p.find_elements(By.CSS_SELECTOR, "svg.main-svg")
        assert svg and svg[0].size["height"] > 100, p.get_attribute("id")
        assert p.find_elements(By.CSS_SELECTOR, "g.trace, g.barlayer path, g.contourlayer g"
                               ", g.parcoords, g.scatterlayer path"), p.get_attribute("id")
    # the loss curves show one legend entry per trial, the histogram has bars
    legend = browser.find_element(By.ID, "plot-loss_curves").find_elements(
        By.CSS_SELECTOR, "g.legend g.traces")
    assert len(legend) == len(study.trials)
    bars = browser.find_element(By.ID, "plot-accuracy_histogram").find_elements(
        By.CSS_SELECTOR, "g.trace.bars path")
    assert len(bars) >= 1
    # the tables a reader looks at first
    best = browser.find_element(By.CSS_SELECTOR, 'table[data-table="best_trial"]')
    assert f"trial {study.best_trial.number}" in best.text.replace("\n", " ")
    results = browser.find_element(By.CSS_SELECTOR, 'table[data-table="results"]')
    assert len(results.find_elements(By.CSS_SELECTOR, "tbody tr")) == 4
    assert results.is_displayed()
    # the report's own figures: accuracy (plain and fair, two lines per loss, each with its
    # mean-spectrum baseline beside it) against sigma with its axis titles, and per loss
    # (markers on a category axis)
    sigma = browser.find_element(By.ID, "plot-accuracy_vs_sigma")
    assert len(sigma.find_elements(By.CSS_SELECTOR, "g.scatterlayer g.trace")) == 4 + 4
    assert len(sigma.find_elements(By.CSS_SELECTOR, "g.scatterlayer g.trace path.point")) == 8 + 8
    titles = [e.get_attribute("textContent") for e in sigma.find_elements(
        By.CSS_SELECTOR, "text.xtitle, text.ytitle")]
    assert titles == ["sigma (eV)", "accuracy (%), validation split (held out)"]
    per_loss = browser.find_element(By.ID, "plot-accuracy_vs_loss")
    ticks = {e.get_attribute("textContent") for e in per_loss.find_elements(
        By.CSS_SELECTOR, "g.xtick text")}
    assert ticks == {"rmse", "cosine"}
    note = browser.find_element(By.CSS_SELECTOR, 'p[data-figure-note="param_importances"]')
    assert "at least 10 complete trials" in note.text and note.is_displayed()
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    _full_page_screenshot(browser, artifacts_dir() / "report.png")


def test_small_report_with_plotlyjs_directory_draws_offline(browser, report_study, tmp_path):
    """--plotlyjs directory: the small page draws every figure from the plotly.min.js beside it
    (the browser reaches no network)."""
    from selenium.webdriver.common.by import By

    paths = write_report(report_study.load(), tmp_path / "small", report_study.artifacts,
                         plotlyjs="directory")
    assert paths.html.stat().st_size < 1_000_000
    browser.get(paths.html.as_uri())
    plots = browser.find_elements(By.CSS_SELECTOR, "div.plot")
    assert len(plots) >= 8
    _wait(browser, lambda d: all(p.get_attribute("data-rendered") for p in plots),
          what="every figure to be drawn")
    assert all(p.get_attribute("data-rendered") == "true" for p in plots)


def _start_dashboard(url: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-c", "from hpo.cli import app; app()", "dashboard", "tiny",
           "--storage", url, "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not sel.select(timeout=1.0):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/dashboard/studies/\d+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("the dashboard did not print its URL: " + "".join(seen))


def test_dashboard_in_chromium(browser, report_study):
    from selenium.webdriver.common.by import By

    study = report_study.load()
    proc, url = _start_dashboard(report_study.url)
    try:
        browser.get(url)
        _wait(browser, lambda d: "tiny" in d.find_element(By.TAG_NAME, "body").text,
              what="the study page")
        # the optimisation history is drawn
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR,
                                                 ".js-plotly-plot svg.main-svg g.trace"),
              what="a plot on the study page")
        _wait(browser, lambda d: f"Best Trial (number={study.best_trial.number})"
              in d.find_element(By.TAG_NAME, "body").text, what="the best trial")
        _full_page_screenshot(browser, artifacts_dir() / "dashboard.png")

        browser.get(url + "/trials")
        body = lambda d: d.find_element(By.TAG_NAME, "body").text  # noqa: E731
        _wait(browser, lambda d: f"{len(study.trials)} Trials" in body(d),
              what="the trial list")
        text = body(browser)
        for t in study.trials:
            assert f"Trial {t.number}" in text
        # the selected trial shows its metrics as user attributes, and its artifacts
        _wait(browser, lambda d: "User Attributes" in body(d) and "metrics" in body(d),
              what="the trial's user attributes")
        _wait(browser, lambda d: "predictions.npz" in body(d) and "checkpoint.pt" in body(d),
              what="the trial's artifacts")
        heading = browser.find_element(By.XPATH, "//*[normalize-space(text())='Artifacts']")
        browser.execute_script(
            "arguments[0].scrollIntoView({block: 'center'});"
            "document.querySelectorAll('*').forEach(e => { if (e.scrollLeft) e.scrollLeft = 0; });",
            heading)
        time.sleep(0.5)
        browser.save_screenshot(str(artifacts_dir() / "dashboard-trials.png"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_user_text_never_runs_in_chromium(browser, report_study, tmp_path):
    """A study description and file names made of markup are shown as text: nothing they hold
    runs (the payloads would set window.pwned), every figure is still drawn, and plotly's
    legend shows the file name as it is."""
    import optuna
    from selenium.webdriver.common.by import By

    from hpo.report import export_best, predict_xyz
    from model.contract import StudyAttr

    img = '<img src=x onerror="window.pwned=1">'
    text = "</script><script>window.pwned=2</script><!--<script>window.pwned=3</script>"
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name=report_study.name, from_storage=report_study.url,
                      to_storage=url, to_study_name=f"tiny {img}")
    study = optuna.load_study(study_name=f"tiny {img}", storage=url)
    study.set_user_attr(StudyAttr.DESCRIPTION, text)
    report = write_report(study, tmp_path / "report", report_study.artifacts)
    exported = export_best(report_study.load(), tmp_path / "export", report_study.artifacts)
    assert exported.checkpoint is not None
    xyz = tmp_path / f"{img}.xyz"
    xyz.write_text("3\ngdb 7\t0\nO\t0.0\t0.0\t0.1173\nH\t0.0\t0.7572\t-0.4692\n"
                   "H\t0.0\t-0.7572\t-0.4692\n")
    checkpoint = tmp_path / '<img src=x onerror="window.pwned=4">.pt'
    shutil.copy(exported.checkpoint, checkpoint)
    predicted = predict_xyz(checkpoint, [xyz], tmp_path / "predicted", force=True)  # water
    for page in (report.html, predicted.html):
        browser.get(page.as_uri())
        plots = browser.find_elements(By.CSS_SELECTOR, "div.plot")
        _wait(browser, lambda d, plots=plots: all(p.get_attribute("data-rendered")
                                                  for p in plots), what="the figures")
        assert all(p.get_attribute("data-rendered") == "true" for p in plots)
        time.sleep(0.5)  # an injected image's onerror fires after its failed load
        assert browser.execute_script("return window.pwned") is None, page
        assert not browser.find_elements(By.CSS_SELECTOR, "img, iframe")
    legend = browser.find_elements(By.CSS_SELECTOR, "g.legend text.legendtext")
    assert [e.get_attribute("textContent") for e in legend] == [
        f"{img}.xyz (H2O) [outside training domain]"]
    browser.get(report.html.as_uri())
    body = browser.find_element(By.TAG_NAME, "body").text
    assert text in body and f"Study tiny {img}" in body
