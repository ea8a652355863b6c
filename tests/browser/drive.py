#!/usr/bin/python3
"""Drives the real web UI in headless Chromium, as a user would, and saves screenshots.

Run by the Swift test "the web UI in headless Chromium" (Tests/SharedTests/Web/BrowserTests.swift)
against a real webserver, scheduler and worker. Reads (from the environment, never the command line):
  WEB_URL          http://127.0.0.1:PORT
  ETL_WEB_USER     login user
  ETL_WEB_PASSWORD login password
  DAG              the DAG to unpause, trigger and watch succeed (it starts paused)
  REPORT           the report to open (it has data)
  SHOTS            folder for the screenshots
Debian packages: chromium, chromium-driver, python3-selenium. Exits 0 when every step worked;
otherwise prints the step that failed, saves failure.png, and exits 1.
"""
import os
import sys
import time

# Selenium talks to chromedriver over HTTP on loopback: keep any proxy of the environment out of it.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

url = os.environ["WEB_URL"].rstrip("/")
dag = os.environ["DAG"]
report = os.environ["REPORT"]
shots = os.environ["SHOTS"]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
            "--no-proxy-server"):  # the server is on loopback: never ask a proxy
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(30)
step = "start"


def shot(name):
    # The whole page, not just the window: widen the window to the document's height first.
    height = driver.execute_script("return Math.max(document.body.scrollHeight, 600)")
    driver.set_window_size(1400, min(height + 40, 4000))
    driver.save_screenshot(os.path.join(shots, name + ".png"))
    driver.set_window_size(1400, 1000)


def replaced(element):
    """A wait condition: `element` no longer belongs to the page. Chromedriver reports that either
    as a stale element or, while the next page is being attached, as an inspector error "Node with
    given id does not belong to the document"; both mean the old page is gone."""
    def check(_):
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise
    return check


def click(element):
    """Clicks a link or button and waits until the next page has replaced this one."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 20).until(replaced(old))
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def row_of(name):
    """The table row of the DAG list whose link names `name`."""
    for row in driver.find_elements(By.CSS_SELECTOR, "table tr"):
        if row.find_elements(By.CSS_SELECTOR, 'a[href="/dags/%s"]' % name):
            return row
    raise AssertionError("no row for DAG %s on %s" % (name, driver.current_url))


try:
    step = "a page without a session leads to the login"
    driver.get(url + "/dags")
    expect("/login" in driver.current_url, "expected the login page, got " + driver.current_url)
    shot("01-login")

    step = "log in"
    driver.find_element(By.NAME, "username").send_keys(os.environ["ETL_WEB_USER"])
    driver.find_element(By.NAME, "password").send_keys(os.environ["ETL_WEB_PASSWORD"])
    click(driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button"))
    expect(driver.current_url.endswith("/dags"), "after login expected /dags, got " + driver.current_url)
    expect(dag in driver.page_source, "the DAG list does not show " + dag)

    step = "unpause " + dag
    expect(row_of(dag).find_elements(By.XPATH, ".//button[normalize-space()='Unpause']"), dag + " should start paused")
    click(row_of(dag).find_element(By.XPATH, ".//button[normalize-space()='Unpause']"))
    expect("Unpaused " + dag in driver.page_source, "no notice that the DAG was unpaused")
    expect(row_of(dag).find_elements(By.XPATH, ".//button[normalize-space()='Pause']"), "the toggle did not change to Pause")
    shot("02-dags")

    step = "trigger " + dag
    driver.get(url + "/dags/" + dag)
    click(driver.find_element(By.XPATH, "//form[contains(@action,'/trigger')]//button"))
    expect("Triggered " + dag in driver.page_source, "no notice that the run was triggered")

    step = "watch the run succeed"
    deadline = time.time() + 90
    state = ""
    while time.time() < deadline:
        driver.get(url + "/dags/" + dag)
        cells = driver.find_elements(By.XPATH, "//h2[normalize-space()='Runs']/following-sibling::table[1]//tr[2]/td[4]")
        state = cells[0].text.strip() if cells else ""
        if state in ("success", "failed"):
            break
        time.sleep(0.5)
    expect(state == "success", "the run ended as '%s'" % state)
    shot("03-dag-graph-and-grid")

    step = "open the run and a task's attempt log"
    click(driver.find_element(By.XPATH, "//h2[normalize-space()='Runs']/following-sibling::table[1]//tr[2]/td[1]/a"))
    expect("success" in driver.page_source, "the run page does not show success")
    shot("04-run")
    click(driver.find_element(By.CSS_SELECTOR, "table tr:nth-child(2) td a"))
    expect("Try 1" in driver.page_source, "the attempt page shows no try")
    shot("05-attempt-log")

    step = "queues and workers"
    driver.get(url + "/queues")
    expect("Workers" in driver.page_source and "alive" in driver.page_source, "no live worker on the queues page")
    shot("06-queues-workers")

    step = "loads"
    driver.get(url + "/loads")
    shot("07-loads")

    step = "open the report " + report
    driver.get(url + "/reports")
    click(driver.find_element(By.CSS_SELECTOR, 'a[href="/reports/%s"]' % report))
    expect(driver.find_elements(By.CSS_SELECTOR, "svg rect"), "the report has no chart")
    expect(driver.find_elements(By.CSS_SELECTOR, "table tr td"), "the report has no table rows")
    expect(driver.find_elements(By.PARTIAL_LINK_TEXT, "Download CSV"), "the report has no CSV link")
    shot("08-report")

    step = "log out"
    click(driver.find_element(By.XPATH, "//button[normalize-space()='Log out']"))
    driver.get(url + "/dags")
    expect("/login" in driver.current_url, "still signed in after logout")
    print("browser: every step passed; screenshots in " + shots)
except Exception as e:  # noqa: BLE001 - report any failure with the step it happened in
    try:
        driver.save_screenshot(os.path.join(shots, "failure.png"))
    except Exception:  # noqa: BLE001
        pass
    print("browser: step '%s' failed: %s (page %s)" % (step, e, driver.current_url), file=sys.stderr)
    sys.exit(1)
finally:
    driver.quit()
