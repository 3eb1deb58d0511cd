"""The index site's front page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): picking the seed machine shows its wheel and pip command,
a machine without a fit shows why, the pasted one-liner output works, and the page's JavaScript
rule gives the same answers as sagewheels/matching.py on tests/matching_cases.json.

The page is opened from file:// (it must work without a server). docs/index-page.png is written
when it is missing or UPDATE_SCREENSHOT=1 is set, so a test run does not dirty the checkout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_make_index import (
    SEED,
    STABLE,
    arch_case_inputs,
    build_site,
    case_wheels,
    check_case,
    check_parse_case,
    load_cases,
    make_wheel,
    matching,
    release_folder,
)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "index-page.png"
SITE_URL = "https://owner.github.io/sageattention/"
OPTIONS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--window-size=960,915", "--hide-scrollbars")


def missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install chromium chromium-driver; .ci/run does where it can)"
    return None


@pytest.fixture(scope="module")
def driver():
    reason = missing()
    if reason:
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in OPTIONS:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A site from fake wheels (the seed's, a Linux one, a stable one) that knows its public URL."""
    tmp = tmp_path_factory.mktemp("page")
    build_site(release_folder(tmp / "release"), tmp / "site", "https://example.org/dl/v2.2.0.post1/",
               "--site-url", SITE_URL)
    return (tmp / "site" / "index.html").as_uri()


@pytest.fixture
def opened(driver, page):
    driver.get(page)
    return driver


def pick(driver, platform, python, torch, cuda, gpus=""):
    from selenium.webdriver.support.ui import Select

    for element, value in (("os", platform), ("python", python), ("torch", torch), ("cuda", cuda)):
        Select(driver.find_element("id", element)).select_by_value(value)
    box = driver.find_element("id", "gpus")
    box.clear()
    box.send_keys(gpus)


def text(driver, element_id) -> str:
    return driver.find_element("id", element_id).text


def test_seed_machine_gets_its_wheel(opened):
    pick(opened, "windows", "cp312", "2.8.0", "cu129", "8.9")
    assert opened.find_element("id", "fit").is_displayed()
    assert not opened.find_element("id", "no-fit").is_displayed()
    assert text(opened, "wheel-name") == SEED
    assert text(opened, "pip-cmd") == (f"python -m pip install sageattention --no-deps --index-url "
                                       f"{SITE_URL}cu129-torch2.8.0/simple/")
    assert text(opened, "triton-cmd") == 'python -m pip install "triton-windows<3.5"'
    assert text(opened, "installer-cmd").endswith(f"--manifest {SITE_URL}manifest.json")
    if not SCREENSHOT.exists() or os.environ.get("UPDATE_SCREENSHOT") == "1":
        opened.find_element("id", "paste").send_keys("windows cp312 2.8.0+cu129 8.9")
        opened.find_element("id", "use-paste").click()
        assert text(opened, "wheel-name") == SEED
        opened.save_screenshot(str(SCREENSHOT))


def test_no_fit_says_why(opened):
    pick(opened, "windows", "cp312", "2.8.0", "cpu", "8.9")
    assert opened.find_element("id", "no-fit").is_displayed()
    assert not opened.find_element("id", "fit").is_displayed()
    why = text(opened, "why")
    assert "your torch is 2.8.0+cpu, not a CUDA build: install a CUDA build of torch" in why
    assert f"{SEED} (cuda)" in why


def test_pasted_line(opened):
    box = opened.find_element("id", "paste")
    box.send_keys("C:\\> python -c ...\nwindows cp313 2.11.0+cu130 12.0")
    opened.find_element("id", "use-paste").click()
    assert text(opened, "paste-error") == ""
    assert text(opened, "wheel-name") == STABLE  # the stable ABI wheel covers the later torch
    assert opened.find_element("id", "torch").get_attribute("value") == "2.11.0"
    box.clear()
    box.send_keys("darwin cp312 2.8.0")
    opened.find_element("id", "use-paste").click()
    assert "platform 'darwin'" in text(opened, "paste-error")


def test_new_machine_values_can_be_pasted(opened):
    """A torch the selects do not list yet is added, and the answer explains the mismatch."""
    box = opened.find_element("id", "paste")
    box.send_keys("windows cp312 2.7.0+cu126 8.6")
    opened.find_element("id", "use-paste").click()
    assert opened.find_element("id", "no-fit").is_displayed()
    assert "yours is 2.7.0+cu126" in text(opened, "why")


def test_javascript_rule_matches_the_cases(opened):
    doc = load_cases()
    for case in doc["cases"]:
        wheels = case_wheels(doc, case)
        result = opened.execute_script("return window.sageMatch(arguments[0], arguments[1]);", wheels,
                                       case["machine"])
        check_case(case, result)
        assert result == matching.explain(wheels, case["machine"]), case["name"]
    for case in doc["arch_cases"]:
        wheels, machine = arch_case_inputs(doc, case)
        result = opened.execute_script("return window.sageMatch(arguments[0], arguments[1]);", wheels, machine)
        assert (result["wheel"] is not None) == case["covered"], case
    for case in doc["parse_cases"]:
        result = opened.execute_script("return window.sageParseMachine(arguments[0]);", case["text"])
        check_parse_case(case, result)
        assert result == matching.parse_machine_line(case["text"]), case["text"]


def test_page_works_without_network(driver, tmp_path):
    """Only file:// and data: resources are requested (no external assets), and without
    --site-url the commands name the folder the page was opened from."""
    folder = tmp_path / "rel"
    make_wheel(folder, SEED)
    build_site(folder, tmp_path / "site", "https://example.org/dl/")
    driver.get((tmp_path / "site" / "index.html").as_uri())
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert [u for u in urls if not u.startswith(("file:", "data:"))] == []
    assert text(driver, "wheel-name") == SEED  # the only wheel, and the default pick fits it
    assert text(driver, "pip-cmd").endswith(f"--index-url {(tmp_path / 'site').as_uri()}/cu129-torch2.8.0/simple/")
