"""Roles, and the role each RPC needs, as data.

Roles are ordered: each may do everything the one before it may.

- ``operator`` scans and reads: it runs scans (the camera, uploads, the
  simulated stage) and reads the unit, its scans, models and calibration.
- ``technician`` may also service the unit: calibrate, label scans for
  training, update the model and the firmware, read the logs.
- ``admin`` may also manage tokens and the configuration.

:data:`FIRST_BOOT_METHODS` are the methods an unprovisioned unit serves in
first-boot mode, where the one-time pairing code stands in for a token
(:mod:`~veriscope.device.auth.pairing`). A provisioned unit answers them with
FAILED_PRECONDITION, to admins only.

:data:`METHOD_ROLES` names every RPC the daemon serves with the least role
that may call it. A method missing from it is refused (fail closed), and a
test checks that every method of every served service is in it. The health
service is open: probes need no token.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Role(enum.StrEnum):
    """A token's role; its value is the name used in tokens.json, on the command line and in the audit log."""

    OPERATOR = "operator"
    TECHNICIAN = "technician"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """0 for operator, 1 for technician, 2 for admin."""
        return _RANKS[self]

    def allows(self, required: Role) -> bool:
        """True when this role may make a call that needs ``required``."""
        return self.rank >= required.rank


_RANKS = {Role.OPERATOR: 0, Role.TECHNICIAN: 1, Role.ADMIN: 2}

OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})
"""Services whose methods need no token: health checks (Check, List, Watch) for probes and load balancers."""


def _service(name: str, methods: Mapping[str, Role]) -> dict[str, Role]:
    return {f"/{name}/{method}": role for method, role in methods.items()}


_OP, _TECH, _ADMIN = Role.OPERATOR, Role.TECHNICIAN, Role.ADMIN

METHOD_ROLES: Mapping[str, Role] = MappingProxyType(
    {
        # The self-test drives every part and the log tells of the unit's internals: servicing, a technician's job.
        **_service(
            "veriscope.v1.DeviceService",
            {"GetDevice": _OP, "GetStatus": _OP, "RunSelfTest": _TECH, "ReadLogs": _TECH},
        ),
        **_service("veriscope.v1.ModelService", {"ListModels": _OP, "GetModel": _OP}),
        # Installing and rolling back change what decides verdicts: a technician's act. A downgrade also needs
        # an admin, which UpdateService checks itself.
        **_service(
            "veriscope.v1.UpdateService",
            {
                "GetUpdateStatus": _OP,
                "UploadBundle": _TECH,
                "GetUpload": _TECH,
                "InstallBundle": _TECH,
                "RollbackUpdate": _TECH,
            },
        ),
        **_service(
            "veriscope.v1.ScanService",
            {
                "CreateScan": _OP,
                "CaptureRegion": _OP,
                "UploadImage": _OP,
                "CompleteScan": _OP,
                "GetScan": _OP,
                "ListScans": _OP,
                "WatchScan": _OP,
                "CancelScan": _OP,
                "GetScanExplanation": _OP,
                "GetScanCertificate": _OP,
                "ReadScanImage": _OP,
                # Ground truth feeds training, and so the next model: an expert's call, not an operator's.
                "LabelScan": _TECH,
            },
        ),
        # Positioning, focusing and capturing are part of scanning.
        **_service("veriscope.v1.CaptureService", {"Capture": _OP, "StreamPreview": _OP, "Autofocus": _OP}),
        **_service("veriscope.v1.CalibrationService", {"GetCalibration": _OP, "Calibrate": _TECH}),
        # Served by simulated units only. Placing an item stands in for the operator's hands: a simulated scan
        # cannot start without it.
        **_service(
            "veriscope.v1.SimulationService",
            {"PlaceItem": _OP, "GetPlacedItem": _OP, "ClearItem": _OP, "ListSources": _OP},
        ),
        # Provisioning a unit is an admin's act. In first-boot mode the pairing code stands in for the token
        # (FIRST_BOOT_METHODS); a provisioned unit refuses these with FAILED_PRECONDITION.
        **_service("veriscope.v1.ProvisioningService", {"GetUnitIdentity": _ADMIN, "InstallUnitIdentity": _ADMIN}),
        # Reflection reads the API's schema, which is public; a token is still needed, like every other call.
        **_service("grpc.reflection.v1alpha.ServerReflection", {"ServerReflectionInfo": _OP}),
    }
)
"""Full method name (``/veriscope.v1.ScanService/CreateScan``) -> the least role that may call it."""


FIRST_BOOT_METHODS = frozenset(
    {"/veriscope.v1.ProvisioningService/GetUnitIdentity", "/veriscope.v1.ProvisioningService/InstallUnitIdentity"}
)
"""The only methods, besides health checks, that a unit in first-boot mode serves; the pairing code opens them."""


def service_of(method: str) -> str:
    """The service of a full method name: ``"veriscope.v1.ScanService"`` for ``"/veriscope.v1.ScanService/GetScan"``."""
    return method.lstrip("/").partition("/")[0]


def is_open(method: str) -> bool:
    """True when ``method`` needs no token (the health service)."""
    return service_of(method) in OPEN_SERVICES


def required_role(method: str) -> Role | None:
    """The least role that may call ``method``; None when it is not in :data:`METHOD_ROLES` (refused)."""
    return METHOD_ROLES.get(method)
