"""The report page in a real headless browser (Debian's chromium + chromedriver, driven by Selenium):
it loads from disk with no console error, and every chart is drawn (a screenshot of each one holds
the colours of its lines or bars; an empty chart has none, tests/report/test_collect.py)."""

from __future__ import annotations

import pytest

from tests.report.pixels import coloured_pixels
from tests.report.runs import reported_run, second_run  # noqa: F401 (fixtures)
from tests.browser import headless_chromium

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path, monkeypatch):
    yield from headless_chromium(tmp_path / "profile", monkeypatch, "1400,1000", console_log=True)


def test_every_chart_renders_from_disk_without_console_errors(reported_run, second_run, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    from unimp_core.report import write_report

    page = write_report([reported_run, second_run], tmp_path / "report.html")
    browser.get(page.resolve().as_uri())
    charts = browser.find_elements(By.CSS_SELECTOR, "img.chart")
    names = [c.get_attribute("data-chart") for c in charts]
    assert names == [*(f"run{i}-{k}" for i in (0, 1) for k in ("loss", "lr", "samples_per_s", "valid")),
                     "eval0-rec-bars", "eval0-rec-popularity"]  # two SASRec runs, one with the breakdown
    assert browser.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)")  # every picture decoded
    for chart, name in zip(charts, names):
        browser.execute_script("arguments[0].scrollIntoView()", chart)
        assert chart.size["width"] > 300 and chart.size["height"] > 150, name
        assert coloured_pixels(chart.screenshot_as_png) > 300, f"chart {name} is drawn empty"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    assert browser.find_element(By.TAG_NAME, "h1").text == "unimp report"
