"""Structured logs: one JSON object a line (or plain text), and the shim's access log.

What a log line may hold is decided here, once: the request id, method, route
template, status, sizes and timings, and messages the shim wrote itself. Never
headers, bodies, query strings or the client's address. As a second line of
defence every formatted line is scrubbed of the configured keys (server key and
client keys), so a key that reached a message by some path nobody foresaw still
does not reach the log.

The access log replaces uvicorn's: one ``tts_shim.access`` record per request,
written when the response is finished (or cut), with the time spent waiting for a
slot and upstream (request to first audio byte) when the request went upstream.
Health probes are logged at ``debug``, so a prober does not flood the log. A client
that hangs up before its response is complete (while sending its body, or while
the audio streams) is logged as such, in that one line: status 499 (nginx's "client
closed request") and ``client_closed: true``; it is not an error of the shim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import time
from contextvars import ContextVar
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shim.config import Config
from shim.context import RequestContext, context_of

__all__ = [
    "ACCESS_LOGGER",
    "QUIET",
    "AccessLogMiddleware",
    "JSONFormatter",
    "TextFormatter",
    "configure",
    "log_config",
]

ACCESS_LOGGER = "tts_shim.access"
#: Routes logged at debug level: probes that would otherwise fill the log.
QUIET_PATHS = frozenset({"/healthz", "/readyz"})
#: Keys shorter than this are not scrubbed (they would match everywhere); such keys
#: are not secrets worth the name anyway.
MIN_SECRET_LENGTH = 4
_MAX_PATH_CHARS = 120

access_logger = logging.getLogger(ACCESS_LOGGER)


class AccessLogMiddleware:
    """Pure ASGI middleware writing one access-log record per HTTP request. The
    outermost: it makes the request's context (:mod:`shim.context`), which the line
    is written from."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = context_of(scope)

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                context.status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        context.upstream_request_id = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                size = len(message.get("body", b""))
                if size and not context.bytes:
                    context.first_byte = time.perf_counter()  # for the metrics
                context.bytes += size
                if not message.get("more_body", False):
                    await send(message)
                    # Only once the server took it: a last message cut while it waited
                    # (a whole body, sent in pieces) is an aborted transfer.
                    context.complete = True
                    return
            await send(message)

        async def receive_logged() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not context.complete:
                context.client_closed = True
            return message

        try:
            await self.app(scope, receive_logged, send_logged)
        except ClientDisconnect:
            # How Starlette tells a hang-up mid-stream on a server speaking ASGI 2.4 (its
            # ``send`` raises OSError): the same as uvicorn's (2.3) disconnect message.
            context.client_closed = not context.complete
        except Exception:
            if context.status is None:
                context.status = 500  # what the outermost error middleware answers
            raise
        finally:
            _emit(context, scope)


def _emit(context: RequestContext, scope: Scope) -> None:
    level = logging.DEBUG if context.path in QUIET_PATHS else logging.INFO
    if not access_logger.isEnabledFor(level):
        return
    route = getattr(scope.get("route"), "path", None)
    # Unmatched paths are the client's words: shortened, and never the query string.
    context.route = route if isinstance(route, str) else context.path[:_MAX_PATH_CHARS]
    status = context.shown_status if context.shown_status is not None else "-"
    # Made here and handed over, not through ``log()``: no caller lookup (a walk up the
    # stack, on every request) for a line that always comes from this function.
    line = access_logger.makeRecord(
        ACCESS_LOGGER,
        level,
        __file__,
        0,
        "%s %s %s",
        (context.method, context.route, status),
        None,
        func="_emit",
        extra={"access": context.fields()},
    )
    access_logger.handle(line)


# -- formatting -----------------------------------------------------------------------


class _Scrubbing(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = tuple(
            sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        )

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    @staticmethod
    def timestamp(record: logging.LogRecord) -> str:
        # time.gmtime, not datetime: a third of the cost, on every line.
        whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{whole}.{int(record.msecs):03d}Z"


#: Built once (json.dumps with options builds an encoder per call). ASCII only: a lone
#: surrogate from a client must not break the log stream.
_ENCODER = json.JSONEncoder(ensure_ascii=True, default=str)


class JSONFormatter(_Scrubbing):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message``, the access
    fields when the record has them, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            data.update(access)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        return self.scrub(_ENCODER.encode(data))


class TextFormatter(_Scrubbing):
    """``time level logger: message key=value ...``, traceback on the following lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.timestamp(record)} {record.levelname.lower()} {record.name}: "
        line += record.getMessage()
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            shown = ("method", "route", "status")
            line += "".join(f" {key}={value}" for key, value in access.items() if key not in shown)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.scrub(line.encode("utf-8", "backslashreplace").decode("utf-8"))


#: Set in the tasks of the embedded ``--mock`` server: its routine records (a second
#: "Started server process", say) are left out; only its errors are logged.
QUIET: ContextVar[bool] = ContextVar("tts_shim_quiet_logs", default=False)


class _Tidy(logging.Filter):
    """Drop the embedded mock's routine records, and tone down what uvicorn logs when
    the graceful shutdown period ends: its "Cancel N running task(s)" is the designed
    outcome of ``--graceful-timeout`` (a warning, not an error; each cut request says so
    itself, see :class:`shim.operations.OperationsMiddleware`), and where the app was not
    told it drains (another server), a traceback of the cancellation says nothing the
    warning does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        cut = isinstance(exc, asyncio.CancelledError) and "graceful shutdown" in str(exc)
        ended = "graceful shutdown" in str(record.msg)
        if QUIET.get() and (record.levelno < logging.ERROR or cut or ended):
            return False  # the mock stops after the shim: what it cuts is unused
        if cut:
            record.msg = "a response still in progress was cut: the graceful timeout passed"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        if cut or ended:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _secrets(config: Config) -> tuple[str, ...]:
    return tuple(k for k in (config.upstream_key, *config.client_keys) if k)


def log_config(config: Config) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document (uvicorn's ``log_config``): every
    record, uvicorn's included, through one formatter on stderr. A new dict each
    call, since ``dictConfig`` consumes parts of it."""
    formatter = JSONFormatter if config.log_format == "json" else TextFormatter
    level = config.log_level.upper()
    quiet = logging.getLevelName(max(logging.WARNING, logging.getLevelName(level)))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"shim": {"()": formatter, "secrets": _secrets(config)}},
        "filters": {"tidy": {"()": _Tidy}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "shim",
                "filters": ["tidy"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            # Replaced by tts_shim.access; uvicorn's would log query strings.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "tts_shim": {"handlers": [], "level": level, "propagate": True},
            # httpx is not the shim's upstream client (aiohttp is), but may run in the same
            # process (`tts-shim usage`, an embedding app): its INFO and DEBUG lines
            # ("HTTP Request: GET <url>") carry whole URLs, query strings included.
            "httpx": {"handlers": [], "level": quiet, "propagate": True},
            "httpcore": {"handlers": [], "level": quiet, "propagate": True},
        },
    }


def configure(config: Config) -> None:
    """Apply :func:`log_config` to this process (for embedding without uvicorn's help).

    Records no longer collect the thread's and process's names and ids, which no line
    shows (the logging HOWTO's "Optimization"), on every record of every request."""
    logging.config.dictConfig(log_config(config))
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
