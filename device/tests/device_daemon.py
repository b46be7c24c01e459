"""The daemon in-process on a background event loop, for device tests."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import grpc

from veriscope.device.config import Config
from veriscope.device.server import Daemon, build_daemon


class InProcessDaemon:
    """The whole daemon (simulated hardware, demo model) served on a loopback port from a background thread.

    ``camera`` sets the simulated sensor size; small sensors keep captures quick.
    """

    def __init__(self, data_dir: Path, *, camera: tuple[int, int] = (640, 480), **sections: dict[str, Any]) -> None:
        config = Config().with_overrides(
            server={"listen": "127.0.0.1:0"},
            device={"data_dir": str(data_dir)},
            camera={"width": camera[0], "height": camera[1]},
            simulate=True,  # type: ignore[arg-type]
            **sections,
        )
        self.loop = asyncio.new_event_loop()
        self.daemon: Daemon = self.loop.run_until_complete(self._build(config))
        self.thread = threading.Thread(target=self.loop.run_forever, name="daemon-loop", daemon=True)
        self.thread.start()
        self.address = self.daemon.address
        self.channel = grpc.insecure_channel(self.address)

    @staticmethod
    async def _build(config: Config) -> Daemon:
        daemon = build_daemon(config)
        await daemon.start()
        return daemon

    def run(self, coro: Any, timeout_s: float = 60.0) -> Any:
        """Run a coroutine on the daemon's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        """Stop serving and the loop."""
        self.channel.close()
        self.run(self.daemon.stop(0), 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
