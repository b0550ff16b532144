"""Scripted behaviour: a bounded queue of steps that the next requests consume.

A test that talks to the mock through another program (the shim) cannot set
headers on the mock's requests, so it queues what should happen instead::

    POST /__mock__/scenario
    {"steps": [{"status": 429}, {"shape": "url-string"}, {"route": "audio", "fault": "reset"}]}

Each request takes the first queued step whose ``route`` is its own (``tts`` for
``POST /v1/tts``, ``audio`` for the CDN), so queued CDN steps never hold up
``tts`` steps and vice versa. With nothing queued the mock behaves normally.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mockserver.audio import FORMATS
from mockserver.config import RESPONSE_SHAPES
from mockserver.latency import GenerationLatency, LatencyError, parse_latency

__all__ = [
    "AUDIO_FAULTS",
    "CUT_AFTER",
    "FAULTS",
    "MAX_DELAY_MS",
    "MAX_TIMES",
    "NO_BODY",
    "ROUTES",
    "STEP_KEYS",
    "Scenario",
    "ScenarioError",
    "Step",
    "parse_scenario",
    "parse_step",
]

ROUTES = ("tts", "audio")
#: ``reset``      close the connection without any reply
#: ``garbage``    a 200 whose body is not what the route promises
#: ``slow-body``  dribble the body out over ``delay_ms``
#: ``truncated``  announce a Content-Length, send half of it, close
#: ``cut``        send the first ``cut_after`` bytes of the body as they stream, close
#: ``signature-junk``  (``audio`` only) the format's signature, then an HTML page
#: ``junk-tail``  (``audio`` only) the clip's first half, then an HTML page instead of the rest
FAULTS = ("reset", "garbage", "slow-body", "truncated", "cut", "signature-junk", "junk-tail")
#: Faults that need a clip to spoil, so only the CDN has them.
AUDIO_FAULTS = ("signature-junk", "junk-tail")
STEP_KEYS = (
    "route",
    "status",
    "headers",
    "body",
    "message",
    "shape",
    "audio_url",
    "audio_format",
    "delay_ms",
    "latency",
    "times",
    "fault",
    "cut_after",
    "ignore_range",
)
MAX_DELAY_MS = 600_000
#: Bytes of the body the ``cut`` fault sends when the step does not say (``cut_after``).
CUT_AFTER = 16 * 1024
MAX_TIMES = 10_000

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Framing is the server's business; a step that set these would break the
# connection in ways the ``truncated`` fault already covers deliberately.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding"})


class _NoBody:
    def __repr__(self) -> str:
        return "NO_BODY"


#: ``Step.body`` when the step does not replace the body.
NO_BODY: Any = _NoBody()


class ScenarioError(ValueError):
    """A step is malformed; the message names the step and the key."""


@dataclass(frozen=True)
class Step:
    """What one request (or ``times`` requests) on ``route`` should get."""

    route: str = "tts"
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Replaces the reply body: a string is sent as is, anything else as JSON.
    body: Any = NO_BODY
    #: Replaces only the ``message`` of the AI/ML error body.
    message: str | None = None
    shape: str | None = None
    audio_url: str | None = None
    audio_format: str | None = None
    delay_ms: float = 0.0
    #: Replaces ``--generation-latency`` for this reply (``tts`` only; ``None``: keep it).
    latency: GenerationLatency | None = None
    times: int = 1
    fault: str | None = None
    #: With ``fault="cut"``: body bytes sent before the connection drops (``None``:
    #: :data:`CUT_AFTER`).
    cut_after: int | None = None
    #: ``audio`` only: answer in full (200), as a CDN without range support would,
    #: whatever ``Range`` the request sent.
    ignore_range: bool = False

    @property
    def is_error(self) -> bool:
        """An error status: the reply is that error, whatever the request was."""
        return self.status is not None and self.status >= 400

    def to_json(self) -> dict[str, Any]:
        """The step as it would be written in a scenario, defaults left out."""
        data: dict[str, Any] = {"route": self.route}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "route" or value is NO_BODY or value is None:
                continue
            if f.name == "headers":
                if value:
                    data["headers"] = dict(value)
                continue
            if f.name in ("delay_ms", "ignore_range") and not value:
                continue
            if f.name == "latency":
                value = str(value)
            data[f.name] = value
        return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_step(data: object, where: str = "step") -> Step:
    """Check one step given as decoded JSON; raise :class:`ScenarioError` if it is bad."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected an object, received {type(data).__name__}")
    unknown = sorted(set(data) - set(STEP_KEYS))
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(STEP_KEYS)}"
        )

    def choice(key: str, choices: Iterable[str]) -> str | None:
        value = data.get(key)
        allowed = tuple(choices)
        if value is not None and value not in allowed:
            raise ScenarioError(
                f"{where}.{key}: expected one of {', '.join(allowed)}, received {value!r}"
            )
        return value

    def text(key: str) -> str | None:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ScenarioError(f"{where}.{key}: expected a string, received {value!r}")
        return value

    route = choice("route", ROUTES) or "tts"
    status = data.get("status")
    if status is not None and (not _is_int(status) or not 200 <= status <= 599):
        raise ScenarioError(f"{where}.status: expected an integer 200..599, received {status!r}")

    headers = data.get("headers") or {}
    if not isinstance(headers, dict):
        raise ScenarioError(f"{where}.headers: expected an object of strings")
    for name, value in headers.items():
        if not _TOKEN.match(name) or not isinstance(value, str) or re.search(r"[\r\n\0]", value):
            raise ScenarioError(f"{where}.headers: invalid header {name!r}: {value!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise ScenarioError(
                f"{where}.headers: {name!r} cannot be set (use fault 'truncated' for a short body)"
            )

    delay = data.get("delay_ms", 0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise ScenarioError(f"{where}.delay_ms: expected a number, received {delay!r}")
    if not 0 <= delay <= MAX_DELAY_MS:
        raise ScenarioError(f"{where}.delay_ms: expected 0..{MAX_DELAY_MS}, received {delay!r}")

    latency: GenerationLatency | None = None
    if data.get("latency") is not None:
        raw_latency = data["latency"]
        if not isinstance(raw_latency, str):
            raise ScenarioError(f"{where}.latency: expected a string, received {raw_latency!r}")
        try:
            latency = parse_latency(raw_latency)
        except LatencyError as exc:
            raise ScenarioError(f"{where}.latency: {exc}") from None

    times = data.get("times", 1)
    if not _is_int(times) or not 1 <= times <= MAX_TIMES:
        raise ScenarioError(
            f"{where}.times: expected an integer 1..{MAX_TIMES}, received {times!r}"
        )

    fault = choice("fault", FAULTS)
    cut_after = data.get("cut_after")
    if cut_after is not None:
        if not _is_int(cut_after) or cut_after < 0:
            raise ScenarioError(
                f"{where}.cut_after: expected a whole number of bytes, received {cut_after!r}"
            )
        if fault != "cut":
            raise ScenarioError(f"{where}.cut_after: applies to fault 'cut' only")
    ignore_range = data.get("ignore_range", False)
    if not isinstance(ignore_range, bool):
        raise ScenarioError(
            f"{where}.ignore_range: expected true or false, received {ignore_range!r}"
        )

    shape = choice("shape", RESPONSE_SHAPES)
    audio_url = text("audio_url")
    if route == "audio" and (shape is not None or audio_url is not None or latency is not None):
        raise ScenarioError(
            f"{where}: 'shape', 'audio_url' and 'latency' apply to route 'tts' only"
        )
    if route == "tts" and ignore_range:
        raise ScenarioError(f"{where}: 'ignore_range' applies to route 'audio' only")

    if route == "tts" and fault in AUDIO_FAULTS:
        raise ScenarioError(f"{where}.fault: {fault!r} applies to route 'audio' only")

    return Step(
        route=route,
        status=status,
        headers={name.lower(): value for name, value in headers.items()},
        body=data.get("body", NO_BODY),
        message=text("message"),
        shape=shape,
        audio_url=audio_url,
        audio_format=choice("audio_format", FORMATS),
        delay_ms=float(delay),
        latency=latency,
        times=times,
        fault=fault,
        cut_after=cut_after,
        ignore_range=ignore_range,
    )


def parse_scenario(payload: object) -> list[Step]:
    """Check a ``{"steps": [...]}`` document; raise :class:`ScenarioError` if it is bad."""
    if not isinstance(payload, dict) or set(payload) != {"steps"}:
        raise ScenarioError('expected an object with exactly one key, "steps"')
    steps = payload["steps"]
    if not isinstance(steps, list):
        raise ScenarioError('"steps" must be an array')
    return [parse_step(step, f"steps[{i}]") for i, step in enumerate(steps)]


class Scenario:
    """The queue of pending steps; thread-safe, at most ``max_steps`` entries."""

    def __init__(self, max_steps: int = 1000) -> None:
        self.max_steps = max_steps
        # [step, remaining uses]
        self._queue: list[list[Any]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, steps: Iterable[Step | Mapping[str, Any]]) -> int:
        """Queue ``steps`` after those already pending, all or none; return the pending count."""
        parsed = [
            s if isinstance(s, Step) else parse_step(dict(s), f"steps[{i}]")
            for i, s in enumerate(steps)
        ]
        with self._lock:
            if len(self._queue) + len(parsed) > self.max_steps:
                raise ScenarioError(
                    f"too many steps: {len(self._queue)} pending + {len(parsed)} new "
                    f"> {self.max_steps}"
                )
            self._queue.extend([step, step.times] for step in parsed)
            return len(self._queue)

    def take(self, route: str) -> Step | None:
        """Use the first pending step for ``route``, or ``None`` if there is none."""
        with self._lock:
            for index, item in enumerate(self._queue):
                step: Step = item[0]
                if step.route == route:
                    item[1] -= 1
                    if item[1] == 0:
                        del self._queue[index]
                    return step
            return None

    def pending(self) -> list[Step]:
        """The queue, oldest first, each step's ``times`` being its remaining uses."""
        with self._lock:
            return [dataclasses.replace(step, times=left) for step, left in self._queue]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
