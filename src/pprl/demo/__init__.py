"""The demo page (`python -m pprl.demo run_dir=<run>`, the `demo` extra): a browser page that protects an uploaded
face crop, a photo with faces anywhere or a short clip with the run's release, shows what the release keeps (the
expression) and hides (an identity attacker's guess), and morphs between two faces (paper Fig. 6).

- `engine`: what the page computes, without Gradio (`Demo`): every protected image comes from `pprl.release`;
- `guards`: the limits of an upload (`conf/demo.yaml`) and the checks before any decoding;
- `page`: the Gradio layout, one status line per tab for bad inputs;
- `serve`: offline serving on 127.0.0.1 (no analytics, no CDN, no share link), the command's body;
- `browser`: headless Chromium driven by Selenium, for the browser test and `benchmarks/demo_browser.py`.

Importing this package imports none of Gradio, Selenium or the model.
"""
