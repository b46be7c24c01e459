"""Over-the-air updates: resumable uploads of signed bundles, and A/B slots with a trial and rollback.

- :mod:`~veriscope.device.updates.uploads`: bundle files arriving in chunks, kept on disk so a dropped stream
  resumes at the committed offset;
- :mod:`~veriscope.device.updates.slots`: the ``a``/``b`` slot directories and the atomically replaced pointer;
- :mod:`~veriscope.device.updates.selftest`: the health check a new model must pass;
- :mod:`~veriscope.device.updates.models`: verify, install, trial, commit, roll back, and hot-swap into the
  scan manager;
- :mod:`~veriscope.device.updates.firmware`: flash the controller board, verify it, fall back;
- :mod:`~veriscope.device.updates.software`: device software in A/B venv slots behind an atomically swapped
  ``current`` symlink, its launcher, and the trial a restarted daemon runs.

See device/docs/updates.md.
"""

from veriscope.device.updates.models import ModelUpdater, SlotView
from veriscope.device.updates.uploads import UploadState, UploadStore

__all__ = ["ModelUpdater", "SlotView", "UploadState", "UploadStore"]
