"""Screenshot the page of a running `thaw serve` as a new user sees it after three ratings.

    thaw serve models/stack --db sqlite:///shots.db &        # ML-100k's stack (make serve)
    python docs/screenshots.py http://127.0.0.1:8000 docs/page-ml100k.png --search star

Picks a profile value, searches titles, rates the first three hits 5 stars and saves the
window once the page shows the fourth list. Needs selenium and Debian's chromium and
chromium-driver (as tests/test_page.py does)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


def browser(profile_dir: str) -> webdriver.Chrome:
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile_dir}", "--window-size=1280,1120"):
        options.add_argument(flag)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="where thaw serve listens, e.g. http://127.0.0.1:8000")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--search", default="star", help="title words whose first three hits are rated")
    parser.add_argument("--field", default="occupation", help="a profile field to set (skipped if absent)")
    parser.add_argument("--value", default="engineer", help="its value")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as profile_dir:
        driver = browser(profile_dir)
        try:
            wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))

            def at_step(n: int) -> None:
                wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-step") == str(n))

            driver.get(args.url.rstrip("/") + "/")
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
            fields = driver.find_elements(By.NAME, args.field)
            if fields:
                Select(fields[0]).select_by_visible_text(args.value)
            driver.find_element(By.ID, "start-button").click()
            at_step(1)
            driver.find_element(By.ID, "search").send_keys(args.search)
            driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
            first_hit = (By.CSS_SELECTOR, "#search-results li")
            wait.until(lambda d: args.search.lower() in d.find_element(*first_hit).text.lower())
            for step in range(3):
                hit = driver.find_elements(By.CSS_SELECTOR, "#search-results li[data-item]")[step]
                hit.find_element(By.CSS_SELECTOR, "button[data-rating='5']").click()
                at_step(step + 2)
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
