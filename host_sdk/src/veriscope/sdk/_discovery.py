"""Find Veriscope units on the local network: browse mDNS/DNS-SD for ``_veriscope._tcp`` and read their TXT records.

One browse is written once, as a coroutine on zeroconf's event loop: :func:`discover_async`
runs it on the caller's loop, :func:`discover` on the loop thread of a blocking
``Zeroconf``. Discovery is IPv4 multicast on the local link, as units announce it.
zeroconf is imported on first use, so that the other commands of the CLI start without it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from veriscope.sdk._exceptions import DeviceUnavailableError

if TYPE_CHECKING:
    from zeroconf import ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceInfo

SERVICE_TYPE = "_veriscope._tcp.local."
"""The DNS-SD service type Veriscope units announce."""

_RESOLVE_TIMEOUT_MS = 3000
_RESOLVE_GRACE_S = 1.0


@dataclass(frozen=True, kw_only=True)
class DiscoveredDevice:
    """A unit found on the local network by :func:`discover`.

    Attributes:
        device_id: The unit's serial number, for example ``"VS-1A2B3C4D"``.
        address: ``"host:port"`` to connect to: ``Client(device.address)`` or ``veriscope --device``.
        addresses: Every IPv4 address the unit announced, the one in ``address`` first.
        port: The gRPC port.
        model: The hardware model, for example ``"veriscope-pi"`` (``"veriscope-sim"`` when simulated).
        software_version: The daemon's software version.
        api_version: The gRPC API version, for example ``"v1"``.
        model_version: The active authentication model as ``name@version``.
        tls: True when the unit's listener needs TLS.
        simulated: True for a simulated unit.
    """

    device_id: str
    address: str
    addresses: tuple[str, ...]
    port: int
    model: str
    software_version: str
    api_version: str
    model_version: str
    tls: bool
    simulated: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "address": self.address,
            "addresses": list(self.addresses),
            "port": self.port,
            "model": self.model,
            "software_version": self.software_version,
            "api_version": self.api_version,
            "model_version": self.model_version,
            "tls": self.tls,
            "simulated": self.simulated,
        }


def discover(timeout: float = 2.0, *, interfaces: Sequence[str] | None = None) -> list[DiscoveredDevice]:
    """Browse the local network for ``timeout`` seconds and return the Veriscope units that answered.

    Args:
        timeout: How long to listen, in seconds (finite, > 0). Units answer within about a second.
        interfaces: Network interfaces to browse on, each a name (``"eth0"``) or one of this host's
            IPv4 addresses (``"127.0.0.1"`` finds units on this machine only); None browses on all.

    Returns:
        The units found, sorted by ``device_id`` then ``address``; a unit seen on several
        interfaces or under several names is one entry. An empty list when none answered.

    Raises:
        ValueError: ``timeout`` is not a finite number > 0, or an interface is unknown or has no IPv4 address.
        DeviceUnavailableError: mDNS cannot run on the chosen interfaces (no such address, no multicast).
        RuntimeError: called from a running event loop; await :func:`discover_async` there.
    """
    chosen = _interface_addresses(timeout, interfaces)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("discover() blocks its thread; in asyncio code, await discover_async()")
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    try:
        zeroconf = Zeroconf(interfaces=chosen or InterfaceChoice.All, ip_version=IPVersion.V4Only)
    except OSError as exc:
        raise _unavailable(chosen, exc) from None
    try:
        loop = zeroconf.loop
        assert loop is not None  # a blocking Zeroconf runs its own loop thread
        future = asyncio.run_coroutine_threadsafe(_browse(zeroconf, timeout), loop)
        try:
            return future.result()
        except BaseException:  # Ctrl-C included: stop the browse before closing
            future.cancel()
            raise
    finally:
        zeroconf.close()


async def discover_async(
    timeout: float = 2.0,  # noqa: ASYNC109 -- how long to listen, not a deadline to cancel at
    *,
    interfaces: Sequence[str] | None = None,
) -> list[DiscoveredDevice]:
    """The asyncio form of :func:`discover`: the same arguments, result and errors, on the running loop."""
    chosen = _interface_addresses(timeout, interfaces)
    from zeroconf import InterfaceChoice, IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    try:
        zeroconf = AsyncZeroconf(interfaces=chosen or InterfaceChoice.All, ip_version=IPVersion.V4Only)
    except OSError as exc:
        raise _unavailable(chosen, exc) from None
    try:
        return await _browse(zeroconf.zeroconf, timeout)
    finally:
        await zeroconf.async_close()


async def _browse(zeroconf: Zeroconf, duration_s: float) -> list[DiscoveredDevice]:
    """Browse for ``duration_s`` seconds on ``zeroconf``'s loop, resolving each instance as it appears."""
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser

    resolving: dict[str, asyncio.Task[AsyncServiceInfo | None]] = {}

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        previous = resolving.pop(name, None)
        if previous is not None:
            previous.cancel()
        if state_change is not ServiceStateChange.Removed:
            resolving[name] = asyncio.get_running_loop().create_task(_resolve(zeroconf, name))

    browser = AsyncServiceBrowser(zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        await asyncio.sleep(duration_s)
    finally:
        await browser.async_cancel()
    tasks = list(resolving.values())
    try:
        if tasks:
            # Records usually come with the answer, so most are resolved already; give late ones a moment.
            await asyncio.wait(tasks, timeout=_RESOLVE_GRACE_S)
    finally:
        for task in tasks:
            task.cancel()
    infos = [task.result() for task in tasks if task.done() and not task.cancelled() and task.exception() is None]
    return merge_devices(device for info in infos if info is not None and (device := _device(info)) is not None)


async def _resolve(zeroconf: Zeroconf, name: str) -> AsyncServiceInfo | None:
    from zeroconf.asyncio import AsyncServiceInfo

    info = AsyncServiceInfo(SERVICE_TYPE, name)
    return info if await info.async_request(zeroconf, _RESOLVE_TIMEOUT_MS) else None


def _device(info: AsyncServiceInfo) -> DiscoveredDevice | None:
    """The unit an instance stands for; None when it announced no IPv4 address or port."""
    from zeroconf import IPVersion

    addresses = sorted(
        {ipaddress.IPv4Address(a) for a in info.parsed_addresses(IPVersion.V4Only)},
        key=lambda ip: (ip.is_loopback, ip),  # an address other hosts can reach first
    )
    if not addresses or not info.port:
        return None
    txt = {key: value or "" for key, value in info.decoded_properties.items()}
    instance = info.name.removesuffix("." + SERVICE_TYPE)
    return DiscoveredDevice(
        device_id=txt.get("serial") or instance,
        address=f"{addresses[0]}:{info.port}",
        addresses=tuple(str(ip) for ip in addresses),
        port=info.port,
        model=txt.get("model", ""),
        software_version=txt.get("sw", ""),
        api_version=txt.get("api", ""),
        model_version=txt.get("mdl", ""),
        tls=txt.get("tls") == "1",
        simulated=txt.get("sim") == "1",
    )


def merge_devices(devices: Iterable[DiscoveredDevice]) -> list[DiscoveredDevice]:
    """One entry per ``device_id`` and port, their addresses joined, sorted by ``device_id`` then ``address``."""
    merged: dict[tuple[str, int], DiscoveredDevice] = {}
    for device in sorted(devices, key=lambda d: (d.device_id, d.address)):
        key = (device.device_id, device.port)
        first = merged.get(key)
        if first is None:
            merged[key] = device
            continue
        extra = tuple(a for a in device.addresses if a not in first.addresses)
        merged[key] = replace(first, addresses=first.addresses + extra)
    return sorted(merged.values(), key=lambda d: (d.device_id, d.address))


def _interface_addresses(timeout: float, interfaces: Sequence[str] | None) -> list[str]:
    """Check the arguments; the IPv4 addresses of ``interfaces``, or an empty list (every interface) for None."""
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    if interfaces is None:
        return []
    if isinstance(interfaces, str):
        raise TypeError("interfaces must be a sequence of names or addresses, not one string")
    import ifaddr

    adapters = ifaddr.get_adapters()
    found: list[str] = []
    for entry in interfaces:
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
    if not found:
        raise ValueError("interfaces is empty; give None to browse on every interface")
    return list(dict.fromkeys(found))


def _unavailable(chosen: list[str], exc: OSError) -> DeviceUnavailableError:
    where = ", ".join(chosen) or "every interface"
    return DeviceUnavailableError(f"cannot browse for units over mDNS on {where}: {exc.strerror or exc}")
