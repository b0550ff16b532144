"""A bounded, thread-safe record of the requests the mock received.

Tests read it to check what a client sent: which key, which body, whether the
``Authorization`` header went to the CDN. Secrets are masked as they are recorded,
so the journal never holds a whole key.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SECRET_HEADERS", "Journal", "mask_headers", "mask_secret"]

#: Headers whose values are masked but for their last four characters.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key"})

JournalEntry = dict[str, Any]


def mask_secret(value: str) -> str:
    """``"Bearer sk-abcdef1234"`` -> ``"Bearer ****1234"``.

    An auth scheme in front is kept, since which scheme was sent is worth checking;
    the credential becomes four stars and its last four characters (only stars if
    it is four characters or shorter).
    """
    scheme, sep, credential = value.partition(" ")
    if not sep:
        scheme, credential = "", value
    credential = credential.strip()
    tail = credential[-4:] if len(credential) > 4 else ""
    masked = "****" + tail
    return f"{scheme} {masked}" if scheme else masked


def mask_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names to values; repeated headers joined with ``", "``; secrets masked."""
    result: dict[str, str] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if name in SECRET_HEADERS:
            value = mask_secret(value)
        result[name] = f"{result[name]}, {value}" if name in result else value
    return result


class Journal:
    """The last ``maxlen`` requests, oldest first.

    Entries are plain JSON-ready dicts; :meth:`entries` returns copies, so callers
    may keep or change them freely.
    """

    def __init__(self, maxlen: int = 1000) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @property
    def maxlen(self) -> int:
        return self._entries.maxlen or 0

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, entry: Mapping[str, Any]) -> JournalEntry:
        """Append a copy of ``entry`` with a sequence number ``seq``; return the stored dict."""
        stored: JournalEntry = {"seq": next(self._ids), **copy.deepcopy(dict(entry))}
        with self._lock:
            self._entries.append(stored)
        return stored

    def annotate(self, entry: JournalEntry, **fields: Any) -> None:
        """Add what is learnt after arrival (the reply's status, say) to a stored entry."""
        with self._lock:
            entry.update(fields)

    def entries(self) -> list[JournalEntry]:
        """Copies of the entries, oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
