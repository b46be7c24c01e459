"""The daemon's recent log lines, kept in memory so that a technician can read them over the API.

:class:`LogBuffer` is a logging handler on the root logger that keeps the last
``capacity`` records as :class:`LogLine` values in a ring, numbered in the
order they were logged. Readers take a snapshot of the ring, filtered by time
and level, and may follow new lines as they arrive: each follower has a bounded
queue, and one too slow to keep up loses lines (the gap shows in the sequence
numbers) rather than growing the daemon's memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

DEFAULT_CAPACITY = 5000
"""Lines the daemon keeps."""
FOLLOW_QUEUE_LINES = 1000
"""Lines a follower may fall behind by before it loses the oldest of them."""
_FORMATTER = logging.Formatter()


@dataclass(frozen=True)
class LogLine:
    """One logged record, formatted."""

    sequence: int
    """Position in the daemon's log since it started, from 1."""
    time: datetime
    """When it was logged (UTC)."""
    level: int
    """The ``logging`` level number, for example ``logging.WARNING``."""
    logger: str
    """The logger's name."""
    message: str
    """The formatted message, with any traceback appended."""


class LogBuffer(logging.Handler):
    """A logging handler that keeps the last ``capacity`` lines and feeds followers. Thread-safe."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__(logging.NOTSET)
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._lines: collections.deque[LogLine] = collections.deque(maxlen=capacity)
        self._sequence = 0
        self._guard = threading.Lock()
        self._followers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[LogLine]]] = set()

    @classmethod
    def install(cls, capacity: int = DEFAULT_CAPACITY) -> LogBuffer:
        """A new buffer attached to the root logger; :meth:`uninstall` detaches it."""
        buffer = cls(capacity)
        logging.getLogger().addHandler(buffer)
        return buffer

    def uninstall(self) -> None:
        """Detach from the root logger."""
        logging.getLogger().removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record`` and hand it to every follower."""
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + _FORMATTER.formatException(record.exc_info)
            elif record.exc_text:
                message += "\n" + record.exc_text
        except Exception:  # a bad format string must not break the daemon's logging
            message = f"{record.msg!r} % {record.args!r}"
        with self._guard:
            self._sequence += 1
            line = LogLine(
                self._sequence,
                datetime.fromtimestamp(record.created, UTC),
                record.levelno,
                record.name,
                message,
            )
            self._lines.append(line)
            followers = list(self._followers)
        for loop, queue in followers:
            # Records come from any thread; each follower's queue lives on its own event loop.
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_offer, queue, line)

    def lines(self, *, since: datetime | None = None, min_level: int = logging.NOTSET) -> list[LogLine]:
        """The kept lines logged at or after ``since`` and at or above ``min_level``, oldest first."""
        with self._guard:
            snapshot = list(self._lines)
        return [line for line in snapshot if _matches(line, since, min_level)]

    async def follow(
        self, *, since: datetime | None = None, min_level: int = logging.NOTSET
    ) -> AsyncGenerator[LogLine, None]:
        """Yield the kept lines that match, then every new line that matches, until the caller stops iterating."""
        queue: asyncio.Queue[LogLine] = asyncio.Queue(FOLLOW_QUEUE_LINES)
        follower = (asyncio.get_running_loop(), queue)
        with self._guard:
            snapshot = list(self._lines)
            self._followers.add(follower)
        try:
            last = 0
            for line in snapshot:
                last = line.sequence
                if _matches(line, since, min_level):
                    yield line
            while True:
                line = await queue.get()
                if line.sequence > last and _matches(line, since, min_level):
                    yield line
        finally:
            with self._guard:
                self._followers.discard(follower)


def _offer(queue: asyncio.Queue[LogLine], line: LogLine) -> None:
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(line)


def _matches(line: LogLine, since: datetime | None, min_level: int) -> bool:
    return line.level >= min_level and (since is None or line.time >= since)
