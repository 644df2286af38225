"""An optional bearer token (``rce serve --token-file PATH``): every route but ``/healthz`` and the page's own
files then needs ``Authorization: Bearer <token>``; anything else is refused with 401, one line of JSON and
``WWW-Authenticate: Bearer``.

The page's files (``/``, ``/static/*``) are the same for every server and hold nothing of the model, so a browser
can load them; everything the page then asks for (``/v1/...``) carries the token, which the page reads from a
``#token=...`` fragment of its address (never sent to the server) or asks for.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from ..core.errors import ConfigError
from .limits import error_body

#: paths answered without the token: liveness, and the page's static files (no data)
OPEN_PATHS = frozenset({"/healthz", "/"})
OPEN_PREFIXES = ("/static/",)


def read_token(path: str | Path) -> str:
    """The token in ``path`` (its content, stripped); a missing, unreadable or empty file is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--token-file {p} does not exist" if not p.exists() else f"--token-file {p} is not a file")
    try:
        token = p.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"--token-file {p} is not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"--token-file {p} cannot be read: {e.strerror or e}") from None
    if not token:
        raise ConfigError(f"--token-file {p} is empty; write the token into it")
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ConfigError(f"--token-file {p}: the token must be printable ASCII without spaces (it travels in an "
                          "HTTP header)")
    return token


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class BearerAuth:
    """ASGI middleware: requests without the right bearer token get 401 (but for :data:`OPEN_PATHS`)."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_open(scope["path"]):
            return await self.app(scope, receive, send)
        given = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
                break
        if given is not None and hmac.compare_digest(given, self.token):
            return await self.app(scope, receive, send)
        if given is None:
            message, challenge = "this server needs a token: send the header Authorization: Bearer <token>", "Bearer"
        else:
            message, challenge = "the bearer token is not this server's", 'Bearer error="invalid_token"'
        body = error_body(401, message)
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode())]})
        await send({"type": "http.response.body", "body": body})
