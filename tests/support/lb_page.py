"""The LB's page (templates/lb/page) in a real headless browser: Debian's chromium driven
through chromedriver by Selenium (`./lab test` installs both with apt), and what the tests
read off the page.

Chromium starts with a fresh profile and without its background traffic (component
updates, sync, field trials, QUIC): on a machine without Internet those connections are
refused, and the tests must send traffic only to loopback and the lab's own hosts.
`--no-sandbox` because the suite runs as root, where Chromium's sandbox refuses to start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

# Debian's packages (chromium, chromium-driver); LAB_CHROMIUM / LAB_CHROMEDRIVER point
# elsewhere (e.g. a CI runner's preinstalled Chrome).
CHROMIUM = os.environ.get("LAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (
    os.environ.get("LAB_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1200,1400",
)

T = TypeVar("T")


@contextmanager
def headless_chromium() -> Iterator[webdriver.Chrome]:
    """A Chromium with a fresh profile, quit (and its profile removed) afterwards."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="lab-chromium-") as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        # Explicit binaries: Selenium Manager would otherwise try to download a driver.
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def poll(driver: webdriver.Chrome, read: Callable[[], T], deadline_s: float, what: str,
         evidence: Path | None = None) -> T:  # fmt: skip
    """Poll `read` (a look at the page) until it returns a truthy value; at the deadline
    fail naming `what`, with a screenshot in `evidence` (a directory) when given."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            value = read()
        except WebDriverException:
            value = None  # the page is being rebuilt under the look: look again
        if value:
            return value
        if time.monotonic() >= deadline:
            shot = ""
            if evidence is not None:
                path = evidence / "page.png"
                driver.save_screenshot(str(path))
                shot = f" (screenshot: {path})"
            raise AssertionError(f"{what}: not within {deadline_s:.0f} s{shot}")
        time.sleep(0.25)


# --- what the page shows ---------------------------------------------------------------


# Read in one script, so the page cannot rebuild its cards (every second) under the look.
SERVICES_SHOWN = """
const shown = {};
for (const card of document.querySelectorAll("#services [data-service]")) {
  const rows = {};
  for (const row of card.querySelectorAll("tr[data-instance]")) {
    rows[row.dataset.instance] = [row.dataset.status, row.dataset.routed];
  }
  shown[card.dataset.service] = rows;
}
return shown;
"""


def services_shown(driver: webdriver.Chrome) -> dict[str, dict[str, tuple[str, str]]]:
    """Service -> instance ID -> (Consul status, "yes"/"no" in nginx's upstream)."""
    shown = driver.execute_script(SERVICES_SHOWN)
    return {
        service: {instance: tuple(row) for instance, row in rows.items()}
        for service, rows in shown.items()
    }


def routed(driver: webdriver.Chrome, service: str) -> set[str]:
    """The instances of `service` the page shows as passing and in nginx's upstream."""
    rows = services_shown(driver).get(service, {})
    return {i for i, (status, upstream) in rows.items() if (status, upstream) == ("passing", "yes")}


def counters(driver: webdriver.Chrome) -> tuple[int, int] | None:
    """(reloads, rejected renders) as the page shows them; None before its first read."""
    shown = driver.find_element(By.ID, "counters")
    reloads, rejected = (shown.get_attribute(f"data-{name}") for name in ("reloads", "rejected"))
    return None if reloads is None else (int(reloads), int(rejected))


def send_requests(driver: webdriver.Chrome, service: str, count: int, deadline_s: float = 60,
                  evidence: Path | None = None) -> list[tuple[str, str]]:  # fmt: skip
    """Press "send requests" for `service`; return (instance, text) of every answer, in order,
    once the page has them all."""
    def offered() -> bool:
        choice = Select(driver.find_element(By.ID, "send-service"))
        return service in [option.get_attribute("value") for option in choice.options]

    poll(driver, offered, deadline_s, f"{service} offered by the send-requests control", evidence)
    Select(driver.find_element(By.ID, "send-service")).select_by_value(service)
    field = driver.find_element(By.ID, "send-count")
    field.clear()
    field.send_keys(str(count))
    answers = driver.find_element(By.ID, "answers")
    driver.execute_script("arguments[0].removeAttribute('data-done')", answers)
    driver.find_element(By.ID, "send-button").click()
    poll(driver, lambda: answers.get_attribute("data-done") == str(count), deadline_s,
         f"{count} answers on the page", evidence)  # fmt: skip
    items = answers.find_elements(By.TAG_NAME, "li")
    return [(i.get_attribute("data-instance") or "", i.text) for i in items]
