"""The page at ``/``: plain HTML, CSS and JavaScript files shipped in the package (``static/``), no build step.

Served from memory with a strict Content-Security-Policy: the page loads nothing but its own files and talks
only to this server's API.
"""

from __future__ import annotations

from importlib import resources

from fastapi.responses import Response

from .limits import HttpError

FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                      "base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def add_routes(app) -> None:
    """``/`` (the page) and ``/static/{name}`` (its script and style), read once from the package."""
    folder = resources.files(__package__).joinpath("static")
    files = {name: folder.joinpath(name).read_bytes() for name in FILES}

    def serve(name: str) -> Response:
        return Response(files[name], media_type=FILES[name], headers=HEADERS)

    @app.get("/", include_in_schema=False)
    async def index():
        return serve("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in files or name == "index.html":
            raise HttpError(404, f"no file {name!r}")
        return serve(name)
