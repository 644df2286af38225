"""uvicorn's HTTP/1.1 protocol (h11) with the two guards that act before a request reaches the app:

- a header timeout: a request's line and headers must arrive within ``header_timeout_s`` (10 s) of the connection
  opening or of the previous response on it; headers trickled at 2 bytes/s get 408 and the connection is closed
  (the body is the app's to bound: ``--timeout-s`` covers reading it);
- uvicorn's own refusals (a request line or header that does not parse, a bad Content-Length, headers over
  :data:`MAX_HEADER_BYTES`) answered with one line of JSON, ``{"error": ..., "status": 400}``, as the app's are.
"""

from __future__ import annotations

from http import HTTPStatus

from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import error_body

#: the most bytes of a request line and headers (h11 refuses more: 400)
MAX_HEADER_BYTES = 32 * 1024


class GuardedH11Protocol(H11Protocol):
    """H11Protocol with a header timeout and one-line JSON refusals (see the module docstring)."""

    header_timeout_s = 10.0  # seconds a client has to send a request's line and headers
    _header_timer = None  # the pending header timeout

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._refuse, 408, "the request line and "
                                                  f"headers took longer than {self.header_timeout_s:g} s")

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers arrived in time
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same time for its headers

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "the request is not valid HTTP/1.1 (its request line, a header, the Content-Length, or "
                          f"headers over {MAX_HEADER_BYTES // 1024} KiB)")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with one line of JSON and close the connection. Written as raw bytes: h11 cannot
        answer a request whose headers never arrived, and after a protocol error it is in its error state."""
        if self.transport.is_closing():
            return
        body = error_body(status, message)
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode() + body)
        self.transport.close()
