"""Click-to-image time of the demo page in a real browser, and the page's screenshot for the docs.

    python benchmarks/demo_browser.py RUN_DIR [key=value ...] [--repeats 5] [--screenshot docs/img/demo.png]
                                      [--out FILE.json]

Serves `pprl.demo` for RUN_DIR on 127.0.0.1 (CPU, one torch thread), opens it in headless Chromium (Selenium,
`pprl.demo.browser`) and times, from the click on Protect to the protected image loaded in the page:

- a face crop of the model's size: test faces of the run, alternating (a new image each time);
- a 640x480 photo with one face (`skimage.data.astronaut()` on a grey canvas, shifted by a pixel each time), the
  photo tab with the demo's detector settings (default: three in-plane angles, faces from 40 px; `key=value`
  arguments change `conf/demo.yaml`, e.g. `detect.rotations=[0]`).

Each timing also gives the server's own share (the status line's seconds: the handler, without the upload, the
PNG encoding and the browser's download). The screenshot is taken of the crop tab after a result is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "1")


def photo(tmp: Path, shift: int) -> Path:
    """A 640x480 photo with the astronaut's face (skimage's public-domain portrait), shifted by `shift` px."""
    from skimage.data import astronaut

    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[:, 64 + shift:576 + shift] = astronaut()[:480]
    path = tmp / f"photo_{shift}.png"
    Image.fromarray(canvas).save(path)
    return path


def server_seconds(status: str) -> float:
    """The handler's seconds at the end of a status line ('... · 0.05 s')."""
    return float(status.rsplit("·", 1)[1].split()[0])


def timed(driver, tab: str, files: list[Path], repeats: int) -> dict:
    """Median / min click-to-image seconds (and the server's share) over `repeats` clicks, files alternating."""
    from pprl.demo.browser import click_until_image, show_tab, text_of, upload

    show_tab(driver, {"crop": "Face crop", "photo": "Photo"}[tab])
    clicks, server = [], []
    for k in range(repeats + 1):  # the first click warms up (lazy imports, the detector's model files)
        upload(driver, f"{tab}-file", files[k % len(files)])
        seconds, _ = click_until_image(driver, f"{tab}-run", f"{tab}-protected")
        if k:
            clicks.append(seconds)
            server.append(server_seconds(text_of(driver, f"{tab}-status")))
    return {"click_to_image_s": {"median": statistics.median(clicks), "min": min(clicks)},
            "server_s": {"median": statistics.median(server), "min": min(server)}, "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="conf/demo.yaml settings, e.g. detect.rotations=[0]")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from pprl.demo import browser
    from pprl.demo.serve import free_port, start
    from pprl.runtime.config import compose_config

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    cfg = compose_config("demo", [f"run_dir={args.run_dir}", "device=cpu", f"port={free_port()}", *args.overrides])
    page, demo, url = start(cfg, block=False)
    tmp = Path(tempfile.mkdtemp(prefix="pprl-demo-bench-"))
    driver = browser.start_browser(tmp / "profile", 1280, 1000)
    try:
        browser.open_page(driver, url)
        faces = [Path(p) for p, _ in demo.examples(4)]
        crop = timed(driver, "crop", faces, args.repeats)
        if args.screenshot:
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.screenshot))
        shot = timed(driver, "photo", [photo(tmp, 0), photo(tmp, 1)], args.repeats)
    finally:
        driver.quit()
        page.close()
        demo.close()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"run_dir": str(args.run_dir), "overrides": args.overrides, "image_size": demo.size,
              "release": demo.release.describe(),
              f"crop_{demo.size}px": crop, "photo_640x480": shot, "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_average_before": load_before, "load_average_after": os.getloadavg()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
