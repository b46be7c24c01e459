"""Type aliases of the SDK's public signatures."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeAlias

from veriscope.sdk._models import ScanEvent

ImageData: TypeAlias = bytes | bytearray | memoryview | str | os.PathLike[str]
"""An image to upload: its encoded PNG or JPEG bytes, or the path of a file holding them."""

EventCallback: TypeAlias = Callable[[ScanEvent], object]
"""Called with each progress event of ``scan()``/``analyze()``. ``AsyncClient`` also awaits what it returns, if awaitable.

An exception raised by the callback stops the flow, cancels the scan and propagates.
"""

Metadata: TypeAlias = Sequence[tuple[str, str]]
"""gRPC metadata sent with every call: (key, value) pairs, keys lowercase ASCII."""
