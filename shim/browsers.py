"""Web pages: which may call the shim, and which ``Host`` names it answers to.

A browser will send a cross-origin ``POST`` with a ``text/plain`` body without asking
first (no CORS preflight), and the shim reads any body as JSON; so without a check,
any page the operator's browser opens could spend their credits on a shim on
loopback. And a page on a name its attacker re-points at 127.0.0.1 (DNS rebinding)
is not even cross-origin to the browser. Two checks, before anything else runs:

* ``Host`` must name the shim (when :attr:`shim.config.Config.host_check`): on a
  loopback bind, the address the connection came in on or ``localhost``, with the
  port; plus any ``--allowed-host``. Otherwise 421 ``host_not_allowed``. A request
  with no ``Host`` at all (HTTP/1.0) is let through: browsers always send one. A
  request-target in absolute form (``GET http://name/path``) must name the shim too
  (400 ``host_not_allowed``): the server puts its ``host[:port]`` in the scope under
  :data:`TARGET_HOST`. Two ``Host`` headers are a 400 ``duplicate_host`` whether or not
  the check is on (RFC 9112, 3.2): the check would read one and the app another.
* A request that carries an ``Origin`` (browsers send one on every cross-origin
  request and every ``POST``) is refused with 403 ``origin_not_allowed`` unless the
  origin is in ``--cors-origin``. Allowed origins get CORS from Starlette's
  :class:`~starlette.middleware.cors.CORSMiddleware`: preflights, ``Access-Control-*``
  and ``Vary: Origin``, with ``x-request-id`` and the retry hints exposed to scripts.

Requests without ``Origin`` (SDKs, curl, servers) skip the CORS layer entirely.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shim import errors
from shim.config import Config
from shim.context import context_of
from shim.errors import APIError, shown

__all__ = ["EXPOSED_HEADERS", "TARGET_HOST", "BrowserGate"]

#: Scope key of an absolute-form request target's ``host[:port]`` (``None``: it names
#: none), set by the server's protocol (:mod:`shim._http_guard`).
TARGET_HOST = "tts_shim.target_host"

#: Response headers a page's script may read: what the OpenAI SDK reads.
EXPOSED_HEADERS = ("x-request-id", "x-should-retry", "retry-after", "retry-after-ms")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class BrowserGate:
    """Pure ASGI middleware: the ``Host`` check, the ``Origin`` refusal, then CORS.

    Place it outside the client-key check, so a CORS preflight (which carries no
    ``Authorization``) is answered, and inside the access log, so refusals are logged.
    """

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.host_check = config.host_check
        self.extra_hosts = frozenset(config.allowed_hosts)
        self.cors = CORSMiddleware(
            app,
            allow_origins=config.cors_origins,
            allow_methods=("GET", "POST"),
            # The OpenAI SDKs send many headers of their own (x-stainless-*, openai-*);
            # credentials travel in Authorization, not cookies.
            allow_headers=("*",),
            expose_headers=EXPOSED_HEADERS,
            # An origin the operator listed may reach a shim on loopback or a private
            # network (Chrome's Private Network Access asks in the preflight).
            allow_private_network=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosts: list[str] = []
        origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                hosts.append(value.decode("latin-1"))
            elif name == b"origin":
                origin = value.decode("latin-1")
        error = self._host_error(hosts, scope)
        if error is not None:
            await _refuse(error, scope, receive, send)
            return
        if origin is None:
            await self.app(scope, receive, send)
            return
        if not self.cors.is_allowed_origin(origin):
            error = errors.origin_not_allowed(
                f"Requests from web pages on {shown(origin)} are not allowed by this "
                "tts-shim; its operator can allow an origin with --cors-origin."
            )
            await _refuse(error, scope, receive, send)
            return
        await self.cors(scope, receive, send)

    def _host_error(self, hosts: list[str], scope: Scope) -> APIError | None:
        """Why the ``Host`` headers (or an absolute-form target) refuse the request."""
        if len(hosts) > 1:
            return errors.duplicate_host(
                f"The request has {len(hosts)} Host headers; send exactly one."
            )
        if not self.host_check:
            return None
        target = scope.get(TARGET_HOST)
        if target is not None and not self._host_allowed(target, scope):
            return errors.host_not_allowed(
                400,
                f"This tts-shim does not answer to {shown(target)}, the host named in the "
                "request line. Call it by its address or localhost, or start it with "
                "--allowed-host for this name.",
            )
        if hosts and not self._host_allowed(hosts[0], scope):
            return errors.host_not_allowed(
                421,
                f"This tts-shim does not answer to the Host {shown(hosts[0])}. Call it by "
                "its address or localhost, or start it with --allowed-host for this name.",
            )
        return None

    def _host_allowed(self, host: str, scope: Scope) -> bool:
        host = host.strip().lower()
        if host in self.extra_hosts:
            return True
        name, port = _split_host(host)
        if name in self.extra_hosts:  # an --allowed-host given without a port: any port
            return True
        server = scope.get("server")
        if not server:
            return False
        default_port = _DEFAULT_PORTS.get(scope.get("scheme", "http"))
        address, server_port = server[0], server[1] or default_port  # None: the default
        if name not in ("localhost", f"[{address}]" if ":" in address else address):
            return False
        if port is None:
            return bool(server_port == default_port)
        return port == str(server_port)


async def _refuse(error: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    await error.response(context_of(scope).request_id)(scope, receive, send)


def _split_host(host: str) -> tuple[str, str | None]:
    """``name:port`` -> ``(name, port)``; an IPv6 literal keeps its brackets."""
    name, colon, port = host.rpartition(":")
    if not colon or "]" in port:  # no port: "name", "[::1]"
        return host.rstrip("."), None
    return name.rstrip("."), port
