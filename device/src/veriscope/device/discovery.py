"""Announces the unit on the local network over mDNS/DNS-SD, so that hosts find it without knowing its address.

The daemon registers one service instance, ``<device_id>._veriscope._tcp.local.``,
on its gRPC port, with the IPv4 addresses it can be reached at and these TXT keys:

====== =====================================================================
serial the device id (serial number)
model  the hardware model, for example ``veriscope-pi``
sw     the daemon's software version
api    the API version, ``v1``
mdl    the active model, ``name@version``
tls    ``1`` when the listener needs TLS, else ``0``
sim    ``1`` when the unit is simulated, else ``0``
====== =====================================================================

What is advertised follows ``server.listen``:

- a wildcard host (``0.0.0.0``, ``[::]``) advertises the IPv4 addresses of
  ``discovery.interfaces`` (all interfaces when empty; loopback only when there
  is nothing else), on those interfaces;
- an IPv4 address or a host name advertises that one address, on its interface
  alone: ``127.0.0.1`` reaches only this machine;
- a unix socket or an IPv6 address is not advertised (discovery is IPv4).

The TXT record is written at start; the active model changes only when the
daemon restarts, and :meth:`Advertiser.update` re-announces a changed record.
Advertising never stops the daemon from serving: every failure is logged as a
warning and the unit stays reachable at its address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import ifaddr
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from veriscope.device import __version__
from veriscope.device.services.device import API_VERSION

if TYPE_CHECKING:
    from veriscope.device.server import Daemon

SERVICE_TYPE = "_veriscope._tcp.local."
"""The DNS-SD service type of a Veriscope unit."""

_log = logging.getLogger("veriscope.device.discovery")
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})
_MAX_LABEL_BYTES = 63
_GOODBYE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Announcement:
    """What the unit announces: where it listens and what it is.

    Attributes:
        device_id: The serial number; also the service instance's name.
        hardware_model: The hardware model, for example ``"veriscope-pi"``.
        software_version: The daemon's version.
        api_version: The gRPC API version, ``"v1"``.
        model_version: The active model as ``name@version``.
        port: The gRPC listener's TCP port.
        addresses: IPv4 addresses the listener is reached at.
        tls: True when the listener needs TLS.
        simulated: True for a simulated unit.
    """

    device_id: str
    hardware_model: str
    software_version: str
    api_version: str
    model_version: str
    port: int
    addresses: tuple[str, ...]
    tls: bool = False
    simulated: bool = False

    def properties(self) -> dict[str, str]:
        """The TXT record, key by key."""
        return {
            "serial": self.device_id,
            "model": self.hardware_model,
            "sw": self.software_version,
            "api": self.api_version,
            "mdl": self.model_version,
            "tls": "1" if self.tls else "0",
            "sim": "1" if self.simulated else "0",
        }

    @property
    def instance_name(self) -> str:
        """``<device_id>._veriscope._tcp.local.``, the label cut to DNS's 63 bytes."""
        label = self.device_id.encode()[:_MAX_LABEL_BYTES].decode(errors="ignore") or "veriscope"
        return f"{label}.{SERVICE_TYPE}"

    @property
    def host_name(self) -> str:
        """``<device-id>.local.``: a host name of the unit's own, so units on one machine never clash."""
        label = "".join(c if c.isascii() and c.isalnum() else "-" for c in self.device_id.lower()).strip("-")
        return f"{label[:_MAX_LABEL_BYTES] or 'veriscope'}.local."

    def service_info(self) -> AsyncServiceInfo:
        """The DNS-SD records of this announcement."""
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self.instance_name,
            port=self.port,
            addresses=[socket.inet_aton(address) for address in self.addresses],
            properties=self.properties(),
            server=self.host_name,
        )


@dataclass(frozen=True)
class Reach:
    """Where an announcement goes: the addresses it names and the interfaces mDNS runs on.

    Attributes:
        addresses: IPv4 addresses advertised for the listener.
        interfaces: IPv4 addresses of the interfaces to announce on; empty means every interface.
    """

    addresses: tuple[str, ...]
    interfaces: tuple[str, ...] = ()


def interface_addresses(entries: Sequence[str]) -> tuple[str, ...]:
    """The IPv4 addresses of ``entries``, each a network interface name (``"eth0"``) or an IPv4 address.

    Raises ValueError naming an entry that is neither a known interface nor an
    IPv4 address, or an interface without an IPv4 address.
    """
    adapters = ifaddr.get_adapters()
    found: list[str] = []
    for entry in entries:
        try:
            found.append(str(ipaddress.IPv4Address(entry)))
            continue
        except ValueError:
            pass
        matches = [adapter for adapter in adapters if entry in (adapter.name, adapter.nice_name)]
        if not matches:
            known = ", ".join(sorted({adapter.nice_name for adapter in adapters})) or "none"
            raise ValueError(f"no network interface {entry!r} (this host has: {known})")
        ipv4 = [ip.ip for adapter in matches for ip in adapter.ips if isinstance(ip.ip, str)]
        if not ipv4:
            raise ValueError(f"network interface {entry!r} has no IPv4 address")
        found.extend(ipv4)
    return tuple(dict.fromkeys(found))


def _host_ipv4_addresses() -> tuple[str, ...]:
    """Every IPv4 address of this host; the loopback ones only when there is no other."""
    addresses = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]
    outside = [a for a in addresses if not ipaddress.IPv4Address(a).is_loopback]
    return tuple(dict.fromkeys(outside or addresses))


def plan_reach(listen: str, interfaces: Sequence[str] = ()) -> Reach:
    """Where to announce a listener on ``listen`` (``server.listen``), given ``discovery.interfaces``.

    Raises ValueError saying why when the listener cannot be announced: a unix
    socket, an IPv6 address, a host name that does not resolve to IPv4, an
    unknown interface, or a host without any IPv4 address.
    """
    if listen.startswith("unix:"):
        raise ValueError(f"the listener {listen!r} is a unix socket, which the network cannot reach")
    host = listen.rpartition(":")[0]
    chosen = interface_addresses(interfaces) if interfaces else ()
    if host.strip("[]") in _WILDCARD_HOSTS:
        addresses = chosen or _host_ipv4_addresses()
        if not addresses:
            raise ValueError("this host has no IPv4 address")
        return Reach(addresses, chosen)
    if host.startswith("[") or ":" in host:
        raise ValueError(f"the listener {listen!r} is IPv6; discovery announces IPv4 listeners only")
    try:
        address = str(ipaddress.IPv4Address(host))
    except ValueError:
        try:
            address = str(socket.getaddrinfo(host, None, family=socket.AF_INET)[0][4][0])
        except (OSError, IndexError) as exc:
            raise ValueError(f"the listener's host {host!r} does not resolve to an IPv4 address: {exc}") from None
    return Reach((address,), chosen or (address,))


class Advertiser:
    """Keeps one :class:`Announcement` registered over mDNS until :meth:`close`.

    :meth:`start` returns at once; registration (which probes the network for
    a name clash first, about 1.5 s) runs in the background. Nothing here
    raises: a failure is logged as a warning, and :meth:`wait_registered`
    tells whether the unit is being advertised.
    """

    def __init__(self, announcement: Announcement, reach: Reach) -> None:
        self._announcement = announcement
        self._reach = reach
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._task: asyncio.Task[bool] | None = None

    @property
    def announcement(self) -> Announcement:
        """What is (or is to be) announced."""
        return self._announcement

    def start(self) -> None:
        """Start registering in the background, on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._register(), name="mdns-advertise")

    async def wait_registered(self) -> bool:
        """Wait until registration has finished; True when the unit is being advertised."""
        if self._task is None:
            return False
        return await asyncio.shield(self._task)

    async def _register(self) -> bool:
        where = ", ".join(self._reach.interfaces) or "every interface"
        try:
            interfaces: list[str] | InterfaceChoice = list(self._reach.interfaces) or InterfaceChoice.All
            self._zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            info = self._announcement.service_info()
            # A clash (another unit with this id) renames the instance: the TXT serial still says which unit it is.
            await (await self._zeroconf.async_register_service(info, allow_name_change=True))
            self._info = info
        except asyncio.CancelledError:
            await self._close_zeroconf()
            raise
        except Exception as exc:  # advertising must never stop the daemon from serving
            _log.warning("not advertising over mDNS on %s: %s", where, str(exc) or type(exc).__name__)
            await self._close_zeroconf()
            return False
        _log.info(
            "advertising %s over mDNS at %s port %d on %s",
            self._info.name,
            ", ".join(self._announcement.addresses),
            self._announcement.port,
            where,
        )
        return True

    async def update(self, announcement: Announcement) -> None:
        """Announce a changed record, for example a new active model; a warning when that fails."""
        self._announcement = announcement
        if self._zeroconf is None or self._info is None or not await self.wait_registered():
            return
        info = announcement.service_info()
        info.name = self._info.name  # keep a name that a clash changed
        try:
            await (await self._zeroconf.async_update_service(info))
            self._info = info
        except Exception as exc:  # advertising must never stop the daemon from serving
            _log.warning("could not update the mDNS announcement: %s", exc)

    async def close(self) -> None:
        """Withdraw the announcement (hosts see the unit leave at once) and release the sockets."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._zeroconf is not None and self._info is not None:
            try:
                goodbye = await self._zeroconf.async_unregister_service(self._info)
                await asyncio.wait_for(goodbye, _GOODBYE_TIMEOUT_S)
            except Exception as exc:  # shutting down goes on regardless
                _log.warning("could not withdraw the mDNS announcement: %s", exc)
            self._info = None
        await self._close_zeroconf()

    async def _close_zeroconf(self) -> None:
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is not None:
            try:
                await zeroconf.async_close()
            except Exception as exc:  # shutting down goes on regardless
                _log.warning("could not close mDNS: %s", exc)


def announcement_for(daemon: Daemon) -> Announcement:
    """The announcement of a started daemon, listening on ``daemon.port``, with no addresses yet."""
    ctx = daemon.context
    return Announcement(
        device_id=ctx.device_id,
        hardware_model=ctx.hardware_model,
        software_version=__version__,
        api_version=API_VERSION,
        model_version=f"{ctx.bundle.name}@{ctx.bundle.version}",
        port=daemon.port,
        addresses=(),
        tls=daemon.tls,
        simulated=ctx.simulated,
    )


def start_advertising(daemon: Daemon) -> Advertiser | None:
    """Start announcing a started daemon as its ``[discovery]`` configuration asks, on the running loop.

    Returns None, after logging why, when discovery is disabled or the listener
    cannot be announced; the daemon serves either way.
    """
    config = daemon.config
    if not config.discovery.enabled:
        _log.info("mDNS discovery is disabled")
        return None
    try:
        reach = plan_reach(config.server.listen, config.discovery.interfaces)
    except ValueError as exc:
        _log.warning("not advertising over mDNS: %s", exc)
        return None
    advertiser = Advertiser(replace(announcement_for(daemon), addresses=reach.addresses), reach)
    advertiser.start()
    return advertiser
