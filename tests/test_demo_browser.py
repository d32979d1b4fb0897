"""The demo page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by Selenium;
nothing is downloaded) opens `pprl.demo`'s page, uploads a test face and a non-image, clicks, and checks the
protected image that comes back, the error line, that the server keeps serving and that nothing was fetched from
anywhere but the server. A screenshot is saved under the test's tmp dir."""

from __future__ import annotations

import importlib.util
import socket
import urllib.request

import numpy as np
import pytest

from pprl.demo.browser import (click_and_wait, click_until_image, fetch_image, find_binaries, image_src, open_page,
                               outside_requests, requested_urls, start_browser, text_of, upload)

if find_binaries() is None:
    pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)
for _module, _extra in (("selenium", "dev"), ("gradio", "demo")):  # found, not imported: Gradio is imported by
    if importlib.util.find_spec(_module) is None:                    # the server with its offline settings
        pytest.skip(f"the {_extra} extra is not installed ({_module})", allow_module_level=True)

from test_demo import _offline_env  # noqa: E402, F401  (the fixture: Gradio's variables restored after the test)

LOCAL = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture()
def looked_up(monkeypatch) -> list[str]:
    """Every host name this process resolves while the test runs (the server runs in it)."""
    hosts: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        hosts.append(host.decode() if isinstance(host, bytes) else str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return hosts


def test_page_protects_an_upload_and_shows_bad_input_offline(tiny_run, tmp_path, looked_up):
    from pprl.demo.serve import free_port, start
    from pprl.runtime.config import compose_config

    port = free_port()
    cfg = compose_config("demo", [f"run_dir={tiny_run}", "device=cpu", f"port={port}", "examples=4"])
    page, demo, url = start(cfg, block=False)
    driver = start_browser(tmp_path / "profile")
    try:
        open_page(driver, url)
        assert driver.title == "pprl demo"
        face, _ = demo.examples(4)[0]
        upload(driver, "crop-file", face)
        seconds, src = click_until_image(driver, "crop-run", "crop-protected")
        original, protected = fetch_image(image_src(driver, "crop-original")), fetch_image(src)
        assert original.shape == protected.shape == (16, 16, 3)  # the size kept
        assert np.abs(original[4:12, 4:12].astype(int) - protected[4:12, 4:12]).mean() > 5  # the face changed
        assert np.array_equal(protected, demo.protect_crop(face, "random", 0).protected)  # the release's pixels
        assert "target" in text_of(driver, "crop-status") and "%" in text_of(driver, "crop-identity")

        (tmp_path / "notes.png").write_text("this is not an image")
        upload(driver, "crop-file", tmp_path / "notes.png")
        click_and_wait(driver, "crop-run", "crop-status")
        status = text_of(driver, "crop-status")
        assert status.startswith("Cannot use this input: not an image") and "Traceback" not in driver.page_source
        assert driver.save_screenshot(str(tmp_path / "demo.png")) and (tmp_path / "demo.png").stat().st_size > 10_000

        with urllib.request.urlopen(url, timeout=30) as response:  # the server still serves after the bad input
            assert response.status == 200
        urls = requested_urls(driver)
    finally:
        driver.quit()
        page.close()
        demo.close()
    assert any(u.startswith(url) for u in urls)
    assert outside_requests(urls, url) == [], f"the page asked for more than the server: {urls[:5]}"
    assert set(looked_up) <= LOCAL, f"the server looked up {sorted(set(looked_up) - LOCAL)}"
