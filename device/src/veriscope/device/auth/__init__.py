"""Access control of the daemon's API: API tokens with roles, checked on every call.

- :mod:`~veriscope.device.auth.roles`: the roles, and the role each RPC needs (data).
- :mod:`~veriscope.device.auth.tokens`: the unit's tokens, stored hashed in ``DATA_DIR/auth/tokens.json``.
- :mod:`~veriscope.device.auth.interceptor`: the server interceptor that checks token, role and rate limit
  before a call's request is read.
- :mod:`~veriscope.device.auth.ratelimit`: token-bucket rate limits per token or peer.
- :mod:`~veriscope.device.auth.audit`: the audit log of privileged and refused calls, ``DATA_DIR/audit.log``.
- :mod:`~veriscope.device.auth.pairing`: the one-time pairing code of first-boot mode, and the interceptor that
  lets it open ProvisioningService only.

``roles`` and ``tokens`` load neither numpy, Pillow nor the model runtime, so
``veriscope-tool tokens`` can manage tokens on a unit without loading the daemon. See device/docs/security.md.
"""
