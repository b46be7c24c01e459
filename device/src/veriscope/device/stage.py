"""What puts a region of the item in front of the lens.

On a real unit that is the person holding the scanner: the daemon asks for the
region (through WatchScan events and the SDK's guidance) and the stage does
nothing. In simulation the simulated bench moves the virtual item, so that a
capture of region "trim" really shows the item's leather trim.
"""

from __future__ import annotations

import abc


class Stage(abc.ABC):
    """Positions the item's regions under the lens."""

    @abc.abstractmethod
    def present(self, region: str) -> None:
        """Bring ``region`` of the item under the lens, at a new spot of it."""


class OperatorStage(Stage):
    """A hand-held unit: the operator positions the scanner, so there is nothing to do."""

    def present(self, region: str) -> None:
        """Do nothing: the operator was asked for the region."""
