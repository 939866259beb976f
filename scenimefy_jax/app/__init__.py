"""The local web app: `python -m scenimefy_jax.main --config=configs/app.py --config.checkpoint=...` (docs/app.md).

`server.TranslationService` turns uploaded bytes into a PNG with a `Translator`; `server.make_server`
serves it and the page in `static/index.html` with the standard library's `http.server`.
"""
