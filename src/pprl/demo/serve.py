"""Serving the page: offline by construction, on 127.0.0.1 unless told otherwise.

Nothing leaves the machine and nothing is fetched at run time:

- Gradio's analytics and its update check are off (`GRADIO_ANALYTICS_ENABLED=False` set before Gradio is
  imported, and `analytics_enabled=False` on the Blocks); the Hugging Face Hub client Gradio imports is offline
  and without telemetry (`HF_HUB_OFFLINE=1`, `HF_HUB_DISABLE_TELEMETRY=1`);
- never a share link (`share=False`: no tunnel, no tunnel binary downloaded), no server-side rendering through
  Node, no PWA manifest, no MCP server, no monitoring page;
- the page is the frontend bundled in the Gradio wheel and its theme names system fonts only (Gradio's default
  themes name web fonts);
- the browser test (`tests/test_demo_browser.py`) loads the page in Chromium with every host but 127.0.0.1
  unresolvable and checks that the page asked for nothing else and that the server looked up no other host.

The page has no login: bound to anything but a loopback address it is served to the whole network, which is
warned about on stderr.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from omegaconf import DictConfig

from pprl.faces import MissingExtra

from .guards import Limits, is_loopback

EXTRA_HINT = 'pip install -e ".[demo]"'
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_SSR_MODE": "False", "GRADIO_MCP_SERVER": "False"}
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial",
                "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")


def require_gradio():
    """The `gradio` module, imported with the offline settings; MissingExtra naming the `demo` extra."""
    os.environ.update(OFFLINE_ENV)
    try:
        import gradio
    except ImportError as exc:
        raise MissingExtra(f"the demo page needs the optional extra (gradio is missing): {EXTRA_HINT}") from exc
    return gradio


def host_warning(host: str) -> str | None:
    """The warning printed when the page is served beyond this machine."""
    if is_loopback(host):
        return None
    return (f"pprl.demo: warning: host={host} serves the page beyond this machine; it has no login, so anyone who "
            "can reach this port can upload pictures to it (host=127.0.0.1 keeps it local)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch(page, host: str, port: int, limits: Limits, *, block: bool = True, open_browser: bool = False) -> str:
    """Serve the Blocks `page` offline (see the module docstring); the page's URL (after it stops if `block`)."""
    gr = require_gradio()
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    page.queue(default_concurrency_limit=1)
    from .page import CSS

    page.launch(server_name=host, server_port=int(port) or free_port(host), share=False, inbrowser=open_browser,
                prevent_thread_lock=True, show_error=False, max_file_size=limits.max_upload_bytes,
                ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False,
                footer_links=["api", "settings"], theme=theme, css=CSS, quiet=True)
    url = str(page.local_url)
    if block:
        print(f"pprl.demo: serving {url} (Ctrl-C stops it)", flush=True)
        page.block_thread()
    return url


def start(cfg: DictConfig, block: bool = True):
    """Load the run, build the page and serve it: `python -m pprl.demo`. Returns (page, demo, url); with
    `block` only once the server stops, and then the request files are removed (else `page.close()` and
    `demo.close()` are the caller's)."""
    from .engine import Demo
    from .page import build_page

    require_gradio()
    demo = Demo.from_config(cfg)
    if block:  # `kill` ends the server like Ctrl-C does, so the request files are removed
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    page = build_page(demo, int(cfg.examples), int(float(cfg.keep_files_minutes) * 60))
    try:
        url = launch(page, str(cfg.host), int(cfg.port), demo.limits, block=block,
                     open_browser=bool(cfg.open_browser))
    finally:
        if block:
            page.close()
            demo.close()
    return page, demo, url
