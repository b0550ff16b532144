"""Pure ASGI middleware: request ids, client keys on ``/v1``, the send timeout."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shim.clients import ClientKeys
from shim.context import context_of
from shim.errors import APIError
from shim.keys import Keys
from shim.responses import SendTimeout

__all__ = ["GateMiddleware"]


class GateMiddleware:
    """Echo every request's id (its context's, :mod:`shim.context`) as
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
        context = context_of(scope)
        rid = context.request_id

        guarded = self.keys.required or self.clients is not None
        if guarded and self.keys.guards(scope["method"], scope["path"]):
            try:
                if self.clients is not None:  # names the client for limits and metrics
                    context.client = self.clients.check(Headers(scope=scope))
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
