"""Pure ASGI middleware: request ids, client keys on ``/v1``, the send timeout."""

from __future__ import annotations

import secrets

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shim.clients import ClientKeys
from shim.errors import APIError
from shim.keys import Keys
from shim.responses import SendTimeout

__all__ = ["GateMiddleware", "new_request_id", "request_id"]


def new_request_id() -> str:
    return f"req_{secrets.token_hex(16)}"  # uuid4's 122 random bits and more, for less


def request_id(scope: Scope) -> str:
    """The request's id (``scope["state"]["request_id"]``), made on first use, so
    every middleware that answers early sends the same one."""
    state = scope.setdefault("state", {})
    rid: str | None = state.get("request_id")
    if rid is None:
        rid = state["request_id"] = new_request_id()
    return rid


class GateMiddleware:
    """Give every request an id (``scope["state"]["request_id"]``) echoed as
    ``x-request-id`` unless a handler set the upstream's, refuse ``/v1`` calls
    without a valid client key before any handler runs, and, with ``send_timeout``,
    cut a response whose client takes no data for that many seconds
    (:class:`shim.responses.SendTimeout`)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Keys,
        clients: ClientKeys | None = None,
        send_timeout: float | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        #: Named client keys (keys file and TTS_SHIM_API_KEYS), issue 13.
        self.clients = clients
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)

        guarded = self.keys.required or self.clients is not None
        if guarded and self.keys.guards(scope["method"], scope["path"]):
            try:
                if self.clients is not None:  # names the client for limits and metrics
                    self.clients.check(scope, Headers(scope=scope))
                else:
                    self.keys.check_client(Headers(scope=scope))
            except APIError as exc:
                await exc.response(rid)(scope, receive, send)
                return

        out: Send = send if self.send_timeout is None else SendTimeout(send, self.send_timeout)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers["x-request-id"] = rid
            await out(message)

        await self.app(scope, receive, send_with_id)
