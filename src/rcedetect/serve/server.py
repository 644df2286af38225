"""Listening and running: the socket is bound before the model loads (a busy port fails at once, one line), and
uvicorn serves the app on it; one line on stdout says where, once the server accepts connections. Listening
beyond this machine without a token is allowed, with a warning on stderr."""

from __future__ import annotations

import ipaddress
import socket
import sys

from ..core.errors import ConfigError
from ..core.settings import int_in_range


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an address of this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: bool) -> str | None:
    """The stderr line for a server others can reach with no token, else None."""
    if token or is_loopback(host):
        return None
    return (f"rce serve: warning: listening on {host} without a token: anyone who can reach this machine can query "
            "the model (--token-file PATH requires one)")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port); port 0 picks a free one."""
    int_in_range(port, "--port", 0, 65535)
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"cannot listen on {host!r}: {e}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse the port at once
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_config(app, log_level: str = "warning", access_log: bool = False):
    """uvicorn's settings of the service: its guarded HTTP protocol (:mod:`.protocol`: a header timeout, headers
    at most 32 KiB, one-line JSON refusals), short keep-alive and shutdown."""
    import uvicorn

    from .protocol import MAX_HEADER_BYTES, GuardedH11Protocol

    return uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on", server_header=False,
                          timeout_keep_alive=5, timeout_graceful_shutdown=5, http=GuardedH11Protocol,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def run(app, sock: socket.socket, host: str, *, ready_line: str, log_level: str = "warning",
        access_log: bool = False, token: bool = False) -> int:
    """Serve ``app`` on ``sock`` until Ctrl-C (exit 0) or SIGTERM (the process ends by the signal, after the same
    graceful shutdown); prints ``ready_line`` and the URL when listening; ``token``: whether the app needs one."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                print(f"{ready_line} on {url_of(sock, host)}/ (API docs at /docs)", flush=True)

    if warning := exposure_warning(host, token):
        print(warning, file=sys.stderr, flush=True)
    server = Server(uvicorn_config(app, log_level=log_level, access_log=access_log))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn shut down gracefully, then re-raised the signal
        print("rce serve: stopped", file=sys.stderr, flush=True)
    finally:
        sock.close()
    return 0 if server.started else 2
