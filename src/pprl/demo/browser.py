"""Driving the demo page in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`) through
Selenium, for `tests/test_demo_browser.py` and `benchmarks/demo_browser.py`.

Nothing is downloaded: Selenium is handed the chromedriver and the browser binary, so Selenium Manager never runs.
The browser cannot reach any host but 127.0.0.1 (`--host-resolver-rules` makes every other name unresolvable,
and background networking is off) and records every request the page makes (Chrome's performance log), so a test
can assert that the page asked for nothing outside the server.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio",
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
BINARIES = ("chromium", "chromedriver")
NETWORK_SCHEMES = ("http", "https", "ws", "wss", "ftp")


def find_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    found = [shutil.which(name) for name in BINARIES]
    return None if None in found else (found[0], found[1])


def start_browser(user_data_dir: str | Path, width: int = 1280, height: int = 1000):
    """A headless Chromium under Selenium, with a fresh profile in `user_data_dir` and request logging."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binaries[0]
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=binaries[1]), options=options)


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call (Network.requestWillBeSent of the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def outside_requests(urls: list[str], base: str) -> list[str]:
    """The network requests (http, https, ws, wss, ftp) among `urls` that do not go to `base`; data:, blob: and
    the browser's own chrome:// pages never leave it."""
    return [u for u in urls if urlsplit(u).scheme in NETWORK_SCHEMES and not u.startswith(base)]


def wait_for(condition, timeout: float, poll: float = 0.02, what: str = "the page"):
    """Poll `condition()` until it returns something truthy (returned) or `timeout` seconds pass (TimeoutError)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def open_page(driver, url: str, timeout: float = 60) -> None:
    """Load the page and wait until Gradio has drawn its tabs."""
    driver.get(url)
    wait_for(lambda: driver.execute_script("return document.querySelectorAll('button[role=tab]').length"),
             timeout, 0.1, "the page's tabs")


def show_tab(driver, name: str) -> None:
    """Click the tab whose label is `name`."""
    driver.execute_script("""const b = [...document.querySelectorAll('button[role=tab]')]
                             .find(b => b.textContent.trim() === arguments[0]); b.click();""", name)


def upload(driver, elem_id: str, path: str | Path, timeout: float = 30) -> None:
    """Put a file into the upload component `elem_id` (cleared first if it holds one) and wait until the server
    has it."""
    fields = driver.find_elements("css selector", f"#{elem_id} input[type=file]")
    if not fields:
        driver.find_element("css selector", f"#{elem_id} button[aria-label=Clear]").click()
        fields = [wait_for(lambda: driver.find_elements("css selector", f"#{elem_id} input[type=file]"), timeout,
                           0.05, "an empty upload field")[0]]
    field = fields[0]
    field.send_keys(str(Path(path).resolve()))
    uploaded = """const a = document.querySelector('#' + arguments[0] + ' a[download]');
                  return a ? a.getAttribute('download') : null;"""
    wait_for(lambda: driver.execute_script(uploaded, elem_id) == Path(path).name, timeout, 0.05,
             f"the upload of {Path(path).name}")


def image_src(driver, elem_id: str) -> str | None:
    """The source URL of the loaded image inside component `elem_id` (None while there is none)."""
    return driver.execute_script("""const i = document.querySelector('#' + arguments[0] + ' img');
                                    return i && i.complete && i.naturalWidth > 0 ? i.src : null;""", elem_id)


def text_of(driver, elem_id: str) -> str:
    return driver.find_element("id", elem_id).text


def click_and_wait(driver, button_id: str, status_id: str, timeout: float = 120) -> float:
    """Click `button_id` and wait until the status line `status_id` shows another text than before; seconds from
    the click to the change."""
    before = text_of(driver, status_id)
    start = time.perf_counter()
    driver.find_element("id", button_id).click()
    wait_for(lambda: text_of(driver, status_id) not in ("", before), timeout, 0.02, f"{status_id} to change")
    return time.perf_counter() - start


def click_until_image(driver, button_id: str, image_id: str, timeout: float = 120) -> tuple[float, str]:
    """Click `button_id`; (seconds until a new image is loaded in `image_id`, its URL)."""
    old = image_src(driver, image_id)
    start = time.perf_counter()
    driver.find_element("id", button_id).click()
    src = wait_for(lambda: (s := image_src(driver, image_id)) and s != old and s, timeout, 0.01,
                   f"a new image in {image_id}")
    return time.perf_counter() - start, src


def fetch_image(src: str) -> np.ndarray:
    """uint8 (H, W, 3) of an image URL the page shows (fetched from the server, as the browser did)."""
    from PIL import Image

    from pprl.runtime.imageio import FORMATS

    with urllib.request.urlopen(src, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read()), formats=FORMATS).convert("RGB"))
