"""A run of failures of one part, told once: a warning when it starts, a line when it ends.

A store that cannot write, or a Redis that does not answer, fails on every request
until it is fixed; a warning per request would bury the log (and the one line that
matters, the first, with the reason). An :class:`Episode` turns that run into two
lines and counters the metrics read::

    writes = Episode("the disk cache cannot write (%s); ...", "the disk cache can write again")
    writes.fail("No space left on device")   # warns the first time only
    writes.fail("No space left on device")   # counted, not logged
    writes.recover()                         # one info line; the next failure warns again

Safe to call from worker threads (the disk store's calls run in them).
"""

from __future__ import annotations

import logging
import threading

__all__ = ["Episode"]

logger = logging.getLogger("tts_shim")


class Episode:
    """Failures of one part, grouped into episodes.

    ``started`` is the warning logged when an episode starts, with one ``%s`` for the
    reason; ``ended`` the info line logged when it ends.
    """

    def __init__(self, started: str, ended: str) -> None:
        self.started = started
        self.ended = ended
        #: Whether an episode is going on.
        self.failing = False
        #: Episodes started, and failures counted (in episodes or not), since creation.
        self.episodes = 0
        self.failures = 0
        self._lock = threading.Lock()

    def fail(self, reason: str) -> bool:
        """Count a failure; returns whether it started an episode (and so was logged)."""
        with self._lock:
            self.failures += 1
            if self.failing:
                return False
            self.failing = True
            self.episodes += 1
        logger.warning(self.started, reason)
        return True

    def recover(self) -> bool:
        """The part works again; returns whether that ended an episode (logged)."""
        with self._lock:
            if not self.failing:
                return False
            self.failing = False
        logger.info(self.ended)
        return True
