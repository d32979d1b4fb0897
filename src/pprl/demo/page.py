"""The demo page's layout (Gradio Blocks): four tabs over `engine.Demo`, a status line per tab.

Every handler runs through `guarded`: an input the page cannot use (not an image, too large, a corrupt clip, a
photo without a face, a missing extra) ends as a one-line reason in the tab's status line, never as a stack
trace, and the server keeps serving; anything unexpected is logged on the server with its traceback and shown as
one line naming the error's type. Images are sent as PNG (Gradio's default WebP would alter the pixels the
release made) and tiny crops are drawn with sharp pixels (CSS `image-rendering: pixelated`).

Element ids (`crop-file`, `crop-run`, `crop-protected`, `crop-status`, ...) are what the browser test drives.
No `from __future__ import annotations` here: Gradio reads the `gr.SelectData` annotation at run time.
"""

import functools
import logging
import time

from pprl.faces import MissingExtra
from pprl.runtime.errors import UserError
from pprl.runtime.imageio import BadImage

from .engine import ALL, RANDOM, Demo

log = logging.getLogger("pprl.demo")

CSS = """
.pixelated img { image-rendering: pixelated; }
.upscaled img { width: 100% !important; height: 100% !important; object-fit: contain; image-rendering: pixelated; }
.status p { font-size: 1.05em; margin: 0.2em 0; }
"""
PREDICTED = "predicted"


def guarded(fn, blanks: tuple):
    """`fn`'s outputs and a status line; for a bad input `blanks` and the reason (see the module docstring)."""

    @functools.wraps(fn)
    def run(*args):
        start = time.perf_counter()
        try:
            *outputs, note = fn(*args)
        except (BadImage, UserError, MissingExtra) as exc:
            return (*blanks, f"**Cannot use this input:** {exc}")
        except Exception as exc:  # a bug: keep serving, tell the visitor in one line, keep the details here
            log.exception("pprl.demo: %s failed", getattr(fn, "__name__", "handler"))
            return (*blanks, f"**Something went wrong** ({type(exc).__name__}); the server's log has the details.")
        return (*outputs, f"{note} · {time.perf_counter() - start:.2f} s")

    return run


def crop_note(r) -> str:
    """The crop tab's status line: the target and, on a loopback page, the attacker's guess on the original."""
    guess = r.readout.identity_original
    if not guess:  # a public page (`Demo.public`) names no one in an upload
        return r.note
    top = max(guess, key=guess.get)
    return f"{r.note} · on the original the attacker says **{top}** ({guess[top]:.0%})"


def _header(demo: Demo) -> str:
    random_note = ("random: each draw decodes new noise, **Re-draw** shows another" if not demo.release.deterministic
                   else "deterministic: the same input always gives the same image")
    return (f"## pprl: a face protected by PPRL-VGAN\n"
            f"Upload a face (or pick a test face of the run) and see what the model hands out: the protected image "
            f"G(I, c), the face with its identity replaced by a target identity c and its expression kept.\n\n"
            f"- **release** `{demo.release.describe()}` ({random_note})\n"
            f"- **classifiers shown**: {demo.describe_classifiers()}\n"
            f"- **run** `{demo.run_name}` · {demo.size} px faces · identities {', '.join(demo.identities)}\n"
            f"- served from this machine only: no analytics, no CDN, no share link")


def build_page(demo: Demo, examples: int = 12, keep_files_s: int = 3600):
    """The Blocks of the page (not launched); `examples` test faces of the run are offered as examples."""
    import gradio as gr

    targets = [RANDOM, *demo.identities]
    with gr.Blocks(title="pprl demo", analytics_enabled=False, delete_cache=(keep_files_s, keep_files_s)) as page:
        gr.Markdown(_header(demo))
        draw = gr.State(0)
        with gr.Tabs():
            with gr.Tab("Face crop", id="crop"):
                _crop_tab(gr, demo, [*targets, (f"{ALL} (a row)", ALL)], draw, examples)
            with gr.Tab("Photo", id="photo"):
                _media_tab(gr, demo, targets, draw, "photo")
            with gr.Tab("Video", id="video"):
                _media_tab(gr, demo, targets, draw, "video")
            with gr.Tab("Morph", id="morph"):
                _morph_tab(gr, demo, examples)
    return page


def _crop_tab(gr, demo: Demo, targets, draw, n_examples: int) -> None:
    """Upload or pick a face, choose the target, see G(I, c) and what the classifiers say."""
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="Face image (any size: centre square, resized as in training)", elem_id="crop-file")
            target = gr.Dropdown(targets, value=RANDOM, label="Target identity c", elem_id="crop-target")
            with gr.Row():
                run = gr.Button("Protect", variant="primary", elem_id="crop-run")
                redraw = gr.Button("Re-draw", elem_id="crop-redraw", visible=not demo.release.deterministic)
            examples = demo.examples(n_examples)
            gallery = gr.Gallery(examples, label="Test faces of the run (click one)", columns=3, height="auto",
                                 allow_preview=False, elem_id="crop-examples", elem_classes="pixelated")
        with gr.Column(scale=2):
            with gr.Row():
                shown = dict(format="png", height=224, interactive=False, elem_classes="upscaled")
                original = gr.Image(label=f"Original I (model input, {demo.size} px)", elem_id="crop-original", **shown)
                protected = gr.Image(label="Protected G(I, c)", elem_id="crop-protected", **shown)
            with gr.Row():
                labels = [gr.Label(num_top_classes=3, label=text, elem_id=eid) for text, eid in (
                    ("Expression on the original", "crop-expr-original"),
                    ("Expression on the protected image (kept?)", "crop-expr-protected"),
                    ("Identity attacker on the protected image (hidden?)", "crop-identity"))]
            status = gr.Markdown(elem_id="crop-status", elem_classes="status")

    def protect(path, tgt, k):
        r = demo.protect_crop(path, tgt, k)
        out = r.readout
        return (r.original, r.protected, out.expression_original, out.expression_protected, out.identity_protected,
                crop_note(r))

    outputs = [original, protected, *labels, status]
    handler = guarded(protect, (None,) * 5)
    inputs = [upload, target, draw]
    run.click(handler, inputs, outputs, concurrency_id="model", api_name="protect_crop")
    _redraw(redraw, draw, handler, inputs, outputs)

    def pick(evt: gr.SelectData):
        return examples[evt.index][0]

    gallery.select(pick, None, upload, api_visibility="private").then(
        handler, inputs, outputs, concurrency_id="model", api_visibility="private")


def _media_tab(gr, demo: Demo, targets, draw, kind: str) -> None:
    """A photo with faces anywhere, or a short clip: every face found is replaced (the `faces` extra)."""
    limits = demo.limits
    if kind == "photo":
        hint = "Photo with faces anywhere (every face found is replaced; boxes show what was found)"
    else:
        hint = (f"Short clip (at most {limits.max_video_seconds:g} s and {limits.max_video_frames} frames; "
                "one target per face track, no audio)")
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label=hint, elem_id=f"{kind}-file")
            target = gr.Dropdown(targets, value=RANDOM, label="Target identity c (per face)", elem_id=f"{kind}-target")
            with gr.Row():
                run = gr.Button("Protect", variant="primary", elem_id=f"{kind}-run")
                redraw = gr.Button("Re-draw", elem_id=f"{kind}-redraw", visible=not demo.release.deterministic)
        with gr.Column(scale=2):
            with gr.Row():
                if kind == "photo":
                    outputs = [gr.Image(label=label, format="png", height=360, interactive=False, elem_id=eid)
                               for label, eid in (("Faces found", "photo-boxes"), ("Protected", "photo-protected"))]
                else:
                    outputs = [gr.Video(label="Protected clip", interactive=False, elem_id="video-protected")]
            status = gr.Markdown(elem_id=f"{kind}-status", elem_classes="status")

    def protect(path, tgt, k):
        if kind == "photo":
            r = demo.protect_photo(path, tgt, k)
            return r.original, r.protected, r.note
        return demo.protect_video(path, tgt, k)

    handler = guarded(protect, (None,) * len(outputs))
    inputs = [upload, target, draw]
    run.click(handler, inputs, [*outputs, status], concurrency_id="model", api_name=f"protect_{kind}")
    _redraw(redraw, draw, handler, inputs, [*outputs, status])


def _morph_tab(gr, demo: Demo, n_examples: int) -> None:
    """Paper Fig. 6 between two uploaded faces."""
    with gr.Row():
        with gr.Column(scale=1):
            first = gr.File(label="Face 1 (I1)", elem_id="morph-file-1")
            second = gr.File(label="Face 2 (I2)", elem_id="morph-file-2")
            code = gr.Dropdown([(f"{PREDICTED} (the identity the classifier sees in face 1)", PREDICTED),
                                *demo.identities], value=PREDICTED, label="Identity code c of the strip")
            run = gr.Button("Morph", variant="primary", elem_id="morph-run")
            gr.Examples(demo.example_pairs(max(1, n_examples // 4)), [first, second],
                        label="Test pairs: one subject, two expressions", elem_id="morph-examples")
        with gr.Column(scale=2):
            gr.Markdown("Paper Fig. 6 (eq. 7): Dec((1 - a) f(I1) + a f(I2), c) for a from 0 to 1, f as the release "
                        "derives it")
            strip = gr.Image(show_label=False, format="png", interactive=False, elem_id="morph-strip")
            status = gr.Markdown(elem_id="morph-status", elem_classes="status")

    def morph(a, b, c):
        r = demo.morph_strip(a, b, c)
        return r.protected, r.note

    run.click(guarded(morph, (None,)), [first, second, code], [strip, status], concurrency_id="model",
              api_name="morph")


def _redraw(button, draw, handler, inputs, outputs) -> None:
    """Re-draw: count the page's draw up, then run the tab's handler again (not offered as an API)."""
    button.click(lambda k: k + 1, draw, draw, api_visibility="private").then(
        handler, inputs, outputs, concurrency_id="model", api_visibility="private")
