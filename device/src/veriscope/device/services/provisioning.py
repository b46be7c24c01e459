"""ProvisioningService: translates first-boot provisioning between the wire and :mod:`veriscope.device.provisioning`.

In first-boot mode the servicer has a :class:`~veriscope.device.provisioning.Provisioner`
and the pairing interceptor guards it. A provisioned unit serves it without one,
and every call is FAILED_PRECONDITION (to admins; others are refused by role first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from veriscope.device import __version__
from veriscope.device.errors import FailedPrecondition
from veriscope.device.provisioning import InstallRequest, Provisioner
from veriscope.device.services._errors import ServicerContext, rpc
from veriscope.v1 import provisioning_service_pb2 as pb
from veriscope.v1 import provisioning_service_pb2_grpc as pb_grpc

_log = logging.getLogger("veriscope.device.provisioning")


class ProvisioningServicer(pb_grpc.ProvisioningServiceServicer):
    """Serves ProvisioningService.

    Args:
        provisioner: The unit side of provisioning in first-boot mode; None on a provisioned unit.
        on_provisioned: Called once the identity is installed and the response is on its way (first-boot mode
            then ends).
    """

    def __init__(self, provisioner: Provisioner | None, on_provisioned: Callable[[], None] | None = None) -> None:
        self._provisioner = provisioner
        self._on_provisioned = on_provisioned

    def _first_boot(self) -> Provisioner:
        if self._provisioner is None:
            raise FailedPrecondition(
                "this unit is provisioned: ProvisioningService works only in first-boot mode; re-provision the unit "
                "on it with 'veriscope-tool provision --data-dir DATA_DIR --ca CA_DIR'"
            )
        return self._provisioner

    @rpc
    async def GetUnitIdentity(
        self, request: pb.GetUnitIdentityRequest, context: ServicerContext
    ) -> pb.GetUnitIdentityResponse:
        """The device id and certificate signing requests of the unit's keys."""
        identity = await asyncio.to_thread(self._first_boot().unit_identity)
        return pb.GetUnitIdentityResponse(
            device_id=identity.device_id,
            tls_csr_pem=identity.tls_csr_pem,
            signing_csr_pem=identity.signing_csr_pem,
            signing_public_key_pem=identity.signing_public_key_pem,
            tls_key_pin=identity.tls_key_pin,
            software_version=__version__,
        )

    @rpc
    async def InstallUnitIdentity(
        self, request: pb.InstallUnitIdentityRequest, context: ServicerContext
    ) -> pb.InstallUnitIdentityResponse:
        """Check and install the certificates, configuration and admin token; then first-boot mode ends."""
        provisioner = self._first_boot()
        install = InstallRequest(
            tls_certificate_chain_pem=request.tls_certificate_chain_pem,
            signing_certificate_pem=request.signing_certificate_pem,
            fleet_ca_certificate_pem=request.fleet_ca_certificate_pem,
            listen=request.listen,
            require_client_cert=request.require_client_cert,
            create_admin_token=request.create_admin_token,
            admin_token_name=request.admin_token_name,
        )
        result = await asyncio.to_thread(provisioner.install, install)
        _log.warning(
            "provisioned unit %s over the network (TLS key pin %s, listen %s)",
            result.device_id,
            result.tls_key_pin,
            result.listen,
        )
        if self._on_provisioned is not None:
            self._on_provisioned()
        return pb.InstallUnitIdentityResponse(
            device_id=result.device_id,
            admin_token=result.admin_token,
            admin_token_id=result.admin_token_id,
            tls_key_pin=result.tls_key_pin,
            signing_key_sha256=result.signing_key_sha256,
            listen=result.listen,
            config_file=str(result.config_file),
        )
