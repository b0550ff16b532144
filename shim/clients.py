"""Named client keys and their limits: the keys file (``--keys-file keys.toml``).

::

    [keys.mobile-app]
    key = "sk-shim-..."              # or key_sha256 = "<hex>", so the file holds no secret
    requests_per_minute = 60
    characters_per_minute = 20000
    usd_per_day = 5.0
    usd_per_month = 100.0

Every limit is optional. Keys from ``TTS_SHIM_API_KEYS`` stay valid, without limits,
named ``env-1``, ``env-2``... in their order; a key in both places is the file's.
Tokens are looked up by their SHA-256, so a file may hold digests only, and the
look-up time says nothing about how close a wrong token came.

:meth:`ClientKeys.reload` (on SIGHUP) swaps the whole table at once: requests
already identified keep the entry they got, new ones see the new file. A file that
does not parse or check is refused with the line at fault, and the old table stays.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic_core import PydanticCustomError
from starlette.datastructures import Headers

from shim import errors
from shim.config import Config, ConfigError, StartupError
from shim.keys import bearer_token

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_CLIENT",
    "Client",
    "ClientKeys",
    "Limits",
    "parse_keys_file",
]

logger = logging.getLogger("tts_shim")

#: The name of requests made without a client key (pass-through mode).
ANONYMOUS = "anonymous"
#: Names become metric labels and Redis key parts: short, and nothing that needs quoting.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Limits(BaseModel):
    """A key's limits; ``None`` is no limit. Windows: a sliding minute, the UTC day and
    the UTC calendar month."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: Annotated[int, Field(gt=0)] | None = None
    characters_per_minute: Annotated[int, Field(gt=0)] | None = None
    usd_per_day: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    usd_per_month: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

    @property
    def any(self) -> bool:
        return any(value is not None for value in self.model_dump().values())


def _sendable(key: str) -> str:
    """A key must be able to arrive as a bearer token: visible ASCII, no whitespace (the
    token is stripped, and a header cannot carry a line break or, reliably, non-ASCII)."""
    for char in key:
        if not "!" <= char <= "~":
            # The key itself is never repeated: the message goes to logs.
            raise PydanticCustomError(
                "unsendable_key",
                f"the key has {_kind(char)}, which an Authorization header cannot carry "
                "in a bearer token; use printable ASCII without spaces",
            )
    return key


def _kind(char: str) -> str:
    if char == " ":
        return "a space"
    if char in "\r\n":
        return "a line break"
    if char.isspace():
        return "whitespace"
    return "a control character" if char.isascii() else "a non-ASCII character"


class _Entry(Limits):
    key: Annotated[str, StringConstraints(min_length=8), AfterValidator(_sendable)] | None = None
    key_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = None


@dataclass(frozen=True)
class Client:
    """Who sent a request: the key's name and its limits."""

    name: str
    limits: Limits


#: Every request without a named client key (pass-through, or an open deployment).
ANONYMOUS_CLIENT = Client(ANONYMOUS, Limits())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _line_of(text: str, name: str, field: str | None) -> int | None:
    """The line of ``[keys.<name>]`` (or of ``field`` in that table), 1-based."""
    lines = text.splitlines()
    header = re.compile(rf"^\s*\[\s*keys\s*\.\s*[\"']?{re.escape(name)}[\"']?\s*\]")
    for number, line in enumerate(lines):
        if header.match(line):
            if field is None:
                return number + 1
            for offset, inner in enumerate(lines[number + 1 :], start=number + 2):
                if inner.lstrip().startswith("["):
                    break
                if re.match(rf"^\s*{re.escape(field)}\s*=", inner):
                    return offset
            return number + 1
    return None


def parse_keys_file(text: str, source: str = "keys file") -> dict[str, Client]:
    """Parse and check a keys file: ``{sha256 of the key: Client}``.

    Raises :class:`~shim.config.ConfigError` naming the line at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None  # the message has line and column
    unknown = sorted(set(data) - {"keys"})
    if unknown:
        raise ConfigError(f"{source}: unknown table {unknown[0]!r}; only [keys.<name>] tables")
    tables = data.get("keys", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: 'keys' must be tables: [keys.<name>]")
    clients: dict[str, Client] = {}
    for name, table in tables.items():
        where = f"{source} line {_line_of(text, name, None) or '?'}"
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: keys.{name} must be a table")
        try:
            entry = _Entry.model_validate(table)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else None
            line = _line_of(text, name, field) or "?"
            message = error["msg"] if error["type"] != "extra_forbidden" else "unknown setting"
            raise ConfigError(f"{source} line {line}: keys.{name}.{field}: {message}") from None
        if (entry.key is None) == (entry.key_sha256 is None):
            raise ConfigError(f"{where}: keys.{name} needs exactly one of key or key_sha256")
        digest = _digest(entry.key) if entry.key is not None else str(entry.key_sha256).lower()
        if digest in clients:
            raise ConfigError(
                f"{where}: keys.{name} has the same key as keys.{clients[digest].name}"
            )
        limits = Limits.model_validate(entry.model_dump(exclude={"key", "key_sha256"}))
        clients[digest] = Client(name, limits)
    return clients


class ClientKeys:
    """Every client key the shim accepts, by SHA-256: the keys file's and the
    environment's (``TTS_SHIM_API_KEYS``)."""

    def __init__(self, env_keys: tuple[str, ...] = (), path: str | None = None) -> None:
        self.path = path
        self._env = {
            _digest(key): Client(f"env-{number}", Limits())
            for number, key in enumerate(env_keys, start=1)
        }
        self._table: dict[str, Client] = dict(self._env)
        if path is not None:
            self._table = self._load(path)

    @classmethod
    def from_config(cls, config: Config) -> ClientKeys | None:
        """The keys ``config`` names; ``None`` when it names none (pass-through mode)."""
        if not config.client_keys and config.keys_file is None:
            return None
        return cls(config.client_keys, config.keys_file)

    def _load(self, path: str) -> dict[str, Client]:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StartupError(f"cannot read the keys file {path}: {exc}") from None
        try:
            return {**self._env, **parse_keys_file(text, path)}
        except ConfigError as exc:
            raise StartupError(str(exc)) from None

    def reload(self) -> bool:
        """Re-read the keys file; on any error log it, keep the current table and
        return ``False``."""
        if self.path is None:
            return False
        try:
            table = self._load(self.path)
        except ConfigError as exc:
            logger.error("keys file refused, the previous keys stay in force: %s", exc)
            return False
        self._table = table  # one assignment: a request sees the old table or the new
        logger.info("keys file reloaded: %d key(s)", len(table))
        return True

    @property
    def names(self) -> list[str]:
        return sorted({client.name for client in self._table.values()})

    def identify(self, headers: Headers) -> Client | None:
        """The client whose key is the bearer token, if any."""
        token = bearer_token(headers)
        return self._table.get(_digest(token)) if token else None

    def check(self, headers: Headers) -> Client:
        """The request's client (for its context, :mod:`shim.context`), or OpenAI's 401."""
        client = self.identify(headers)
        if client is None:
            raise errors.invalid_api_key(
                "Incorrect or missing API key for this shim. Send one of its client keys "
                "as the bearer token."
            )
        return client
