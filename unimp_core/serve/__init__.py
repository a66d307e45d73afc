"""`unimp serve`: a trained run answering over HTTP (JSON API, a web page, Prometheus metrics).

    api.py      request bodies and answers (pydantic) and the OpenAPI description built from them
    batcher.py  dynamic micro-batching: concurrent requests gathered into one forward pass
    engine.py   the loaded run: resolves users and items, answers batches in one model thread
    app.py      the aiohttp application (routes, errors, limits, metrics) and `run_serve`
    page.html   the web page at `/`
"""
