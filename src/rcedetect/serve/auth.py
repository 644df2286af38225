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
from .limits import error_response


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


class BearerAuth:
    """ASGI middleware: requests without the right bearer token get 401, but for liveness and the page's files."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in ("/healthz", "/") or scope["path"].startswith("/static/"):
            return await self.app(scope, receive, send)
        header = next((value for name, value in scope.get("headers", ()) if name == b"authorization"), b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            return await self.app(scope, receive, send)
        if scheme.lower() != b"bearer":
            message, challenge = "this server needs a token: send the header Authorization: Bearer <token>", "Bearer"
        else:
            message, challenge = "the bearer token is not this server's", 'Bearer error="invalid_token"'
        await error_response(401, message, {"WWW-Authenticate": challenge})(scope, receive, send)
