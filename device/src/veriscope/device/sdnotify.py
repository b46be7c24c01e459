"""Tells the service manager how the daemon is doing: ready, alive, stopping (the systemd notify protocol).

Under a unit with ``Type=notify`` systemd passes ``NOTIFY_SOCKET``, a unix datagram socket (a path, or an
abstract name written with a leading ``@``). Each message is one datagram of ``KEY=VALUE`` lines:

- ``READY=1`` once the daemon serves, which ends the unit's start-up;
- ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, sent from the event loop, so that a loop that hangs stops the
  pings and systemd restarts the unit (``WatchdogSec``);
- ``STOPPING=1`` when shutdown begins.

Without ``NOTIFY_SOCKET`` (a daemon started by hand, or by tests) every call does nothing. See
device/packaging/systemd/veriscope-device.service and device/docs/raspberry-pi.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping

_log = logging.getLogger("veriscope.device.sdnotify")


class Notifier:
    """Sends notify messages to one socket; does nothing when there is none.

    Args:
        address: The ``NOTIFY_SOCKET`` value: a filesystem path, or ``@name`` for an abstract socket; None or
            empty disables the notifier.
        watchdog_usec: The ``WATCHDOG_USEC`` value, the watchdog timeout in microseconds; None or 0 when the
            unit has no watchdog.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd configured through ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog is ignored when ``WATCHDOG_PID`` names another process, or ``WATCHDOG_USEC`` is not a
        positive integer.
        """
        env = os.environ if environ is None else environ
        usec: int | None = None
        pid = env.get("WATCHDOG_PID", "")
        if not pid or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "")) or None
            except ValueError:
                usec = None
            if usec is not None and usec < 0:
                usec = None
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send ``WATCHDOG=1``, in seconds: half the watchdog timeout; None without a watchdog."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=VALUE`` strings) as one message; returns False when none was sent.

        A socket that cannot be reached is logged, never raised: the daemon serves on without its manager.
        """
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            _log.warning("cannot notify the service manager at %s: %s", self.address, exc)
            return False
        return True

    async def watchdog(self) -> None:
        """Send ``WATCHDOG=1`` every :attr:`watchdog_interval_s` until cancelled; returns at once without one."""
        interval_s = self.watchdog_interval_s
        if interval_s is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def serving(status: str, notifier: Notifier | None = None) -> AsyncIterator[Notifier]:
    """Report the daemon ready (with ``status``) and keep the watchdog fed for the body; on leaving it, report
    ``STOPPING=1``.

    Args:
        status: A one-line status for ``systemctl status``, e.g. ``serving on 0.0.0.0:50051``.
        notifier: Defaults to :meth:`Notifier.from_env`.
    """
    notifier = notifier or Notifier.from_env()
    notifier.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
    pinger = asyncio.get_running_loop().create_task(notifier.watchdog())
    try:
        yield notifier
    finally:
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
        notifier.notify("STOPPING=1", "STATUS=stopping")
