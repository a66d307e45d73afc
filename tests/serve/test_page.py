"""The web page at `/` in a real headless browser (Debian's chromium + chromedriver, driven by Selenium)."""

from __future__ import annotations

import pytest

from tests.browser import CHROMEDRIVER, CHROMIUM, headless_chromium
from tests.conftest import skip_unless_ci
from tests.evaluation.trained import trained_run
from tests.serve.process import ServerProcess


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if CHROMIUM is None or CHROMEDRIVER is None:
        skip_unless_ci("no chromium or chromedriver (Debian's chromium and chromium-driver; .ci/run installs them)")
    srv = ServerProcess(trained_run(tmp_path_factory)).start()
    yield srv
    srv.stop()


@pytest.fixture
def browser(tmp_path, monkeypatch):
    yield from headless_chromium(tmp_path / "profile", monkeypatch, "1200,900")


def test_pick_a_user_see_recommendations_and_an_explanation(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.url + "/")
    wait.until(lambda d: d.find_element(By.ID, "user").get_attribute("data-loaded") == "true")
    assert "SYNTHETIC" in browser.find_element(By.ID, "status").text
    Select(browser.find_element(By.ID, "user")).select_by_value("3")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs .card")) == 10)
    history = browser.find_elements(By.CSS_SELECTOR, "#history-items .card")
    assert len(history) == 5 and "of 10 items" in browser.find_element(By.ID, "history-title").text
    # the pictures really load (served by /v1/items/{id}/image)
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#recs img, #history-items img')].every(i => i.complete && i.naturalWidth > 0)"))
    scores = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "#recs .score")]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    first = browser.find_element(By.CSS_SELECTOR, "#recs .card")
    first.find_element(By.CSS_SELECTOR, "button.explain").click()
    text = wait.until(EC.presence_of_element_located((By.ID, "explanation-text"))).text
    assert text.startswith("rating: ")
    card = browser.find_element(By.CSS_SELECTOR, "#explanation .card")
    assert card.get_attribute("data-item") == first.get_attribute("data-item")
    assert browser.find_element(By.ID, "error").text == ""


def test_a_typed_history_and_its_mistakes(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.url + "/")
    wait.until(lambda d: d.find_element(By.ID, "user").get_attribute("data-loaded") == "true")
    box = browser.find_element(By.ID, "history")
    box.send_keys("4, NOPE")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_element(By.ID, "error").text != "")
    assert "history NOPE: no item" in browser.find_element(By.ID, "error").text
    box.clear()
    box.send_keys("4, 6, SYN00001")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("3")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs .card")) == 3)
    shown = [c.get_attribute("data-item") for c in browser.find_elements(By.CSS_SELECTOR, "#history-items .card")]
    assert shown[:2] == ["4", "6"] and browser.find_element(By.ID, "error").text == ""
