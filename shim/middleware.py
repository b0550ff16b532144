"""Pure ASGI middleware: request ids, client keys on ``/v1``, body-size guard."""

from __future__ import annotations

import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shim.clients import ClientKeys
from shim.errors import APIError
from shim.keys import Keys

__all__ = ["GateMiddleware", "new_request_id"]


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class GateMiddleware:
    """Give every request an id (``scope["state"]["request_id"]``) echoed as
    ``x-request-id`` unless a handler set the upstream's, and refuse ``/v1`` calls
    without a valid client key before any handler runs."""

    def __init__(self, app: ASGIApp, keys: Keys, clients: ClientKeys | None = None) -> None:
        self.app = app
        self.keys = keys
        #: Named client keys (keys file and TTS_SHIM_API_KEYS), issue 13.
        self.clients = clients

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        if (self.keys.required or self.clients) and scope["path"].startswith("/v1/"):
            try:
                if self.clients is not None:  # names the client for limits and metrics
                    self.clients.check(scope, Headers(scope=scope))
                else:
                    self.keys.check_client(Headers(scope=scope))
            except APIError as exc:
                await exc.response(request_id)(scope, receive, send)
                return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-request-id" not in headers:
                    headers["x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
