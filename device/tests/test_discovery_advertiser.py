"""The mDNS advertiser: where a listener is announced, the TXT record, configuration, and failures that never stop
the daemon. The live tests announce on loopback only (127.0.0.1) and read the records back with zeroconf."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ifaddr
import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from veriscope.device import cli, discovery
from veriscope.device.config import Config, load_config
from veriscope.device.discovery import SERVICE_TYPE, Advertiser, Announcement, Reach, plan_reach, start_advertising
from veriscope.device.errors import ConfigError

ANNOUNCEMENT = Announcement(
    device_id="VS-TEST-0001",
    hardware_model="veriscope-sim",
    software_version="0.1.0",
    api_version="v1",
    model_version="veriscope-demo@0.2.0",
    port=50123,
    addresses=("127.0.0.1",),
    simulated=True,
)
LOOPBACK = Reach(("127.0.0.1",), ("127.0.0.1",))


@pytest.fixture
def lan_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host with loopback, a wired interface with two IPv4 addresses, and Wi-Fi with IPv6 only."""
    adapters = [
        ifaddr.Adapter("lo", "lo", [ifaddr.IP("127.0.0.1", 8, "lo"), ifaddr.IP(("::1", 0, 0), 128, "lo")]),
        ifaddr.Adapter("eth0", "eth0", [ifaddr.IP("192.168.1.20", 24, "eth0"), ifaddr.IP("10.0.0.5", 8, "eth0")]),
        ifaddr.Adapter("wlan0", "wlan0", [ifaddr.IP(("fd00::7", 0, 0), 64, "wlan0")]),
    ]
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: adapters)


# --- Where a listener is announced --------------------------------------------------------------------------------


def test_a_loopback_listener_is_announced_on_loopback_only() -> None:
    assert plan_reach("127.0.0.1:50051") == Reach(("127.0.0.1",), ("127.0.0.1",))
    assert plan_reach("localhost:50051") == Reach(("127.0.0.1",), ("127.0.0.1",))


@pytest.mark.usefixtures("lan_host")
def test_a_wildcard_listener_announces_the_hosts_addresses_but_loopback() -> None:
    assert plan_reach("0.0.0.0:50051") == Reach(("192.168.1.20", "10.0.0.5"), ())
    assert plan_reach("[::]:50051") == Reach(("192.168.1.20", "10.0.0.5"), ())
    # Chosen interfaces, by name or address, narrow both what is announced and where.
    assert plan_reach("0.0.0.0:50051", ["eth0"]) == Reach(("192.168.1.20", "10.0.0.5"), ("192.168.1.20", "10.0.0.5"))
    assert plan_reach("0.0.0.0:50051", ["10.0.0.5", "lo"]) == Reach(
        ("10.0.0.5", "127.0.0.1"), ("10.0.0.5", "127.0.0.1")
    )
    # A specific listener announces its own address, on the chosen interfaces.
    assert plan_reach("192.168.1.20:50051", ["eth0"]) == Reach(("192.168.1.20",), ("192.168.1.20", "10.0.0.5"))


def test_a_host_with_loopback_only_announces_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: [ifaddr.Adapter("lo", "lo", [ifaddr.IP("127.0.0.1", 8, "lo")])])
    assert plan_reach("0.0.0.0:50051") == Reach(("127.0.0.1",), ())


@pytest.mark.usefixtures("lan_host")
@pytest.mark.parametrize(
    ("listen", "interfaces", "why"),
    [
        ("unix:/run/veriscope.sock", (), "unix socket"),
        ("[::1]:50051", (), "IPv6"),
        ("[fd00::7]:50051", (), "IPv6"),
        ("0.0.0.0:50051", ("eth9",), r"no network interface 'eth9' \(this host has: eth0, lo, wlan0\)"),
        ("0.0.0.0:50051", ("wlan0",), "'wlan0' has no IPv4 address"),
        ("no-such-host.invalid:50051", (), "does not resolve"),
    ],
)
def test_listeners_that_cannot_be_announced_say_why(listen: str, interfaces: tuple[str, ...], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        plan_reach(listen, interfaces)


# --- The record ---------------------------------------------------------------------------------------------------


def test_the_txt_record_names_the_unit_and_its_versions() -> None:
    assert ANNOUNCEMENT.properties() == {
        "serial": "VS-TEST-0001",
        "model": "veriscope-sim",
        "sw": "0.1.0",
        "api": "v1",
        "mdl": "veriscope-demo@0.2.0",
        "tls": "0",
        "sim": "1",
    }
    assert ANNOUNCEMENT.instance_name == "VS-TEST-0001._veriscope._tcp.local."
    assert ANNOUNCEMENT.host_name == "vs-test-0001.local."


def test_odd_device_ids_still_make_valid_names() -> None:
    odd = replace(ANNOUNCEMENT, device_id="Bench unit #3/" + "x" * 80)
    assert odd.host_name == "bench-unit--3-" + "x" * 49 + ".local."
    label = odd.instance_name.removesuffix("." + SERVICE_TYPE)
    assert len(label.encode()) == 63
    assert odd.properties()["serial"] == odd.device_id  # the TXT record keeps the whole id


# --- Configuration and the command line ---------------------------------------------------------------------------


def test_discovery_is_on_by_default_and_configurable(tmp_path: Path) -> None:
    assert Config().discovery.enabled is True
    assert Config().discovery.interfaces == ()
    path = tmp_path / "device.toml"
    path.write_text('[discovery]\nenabled = false\ninterfaces = ["eth0", "192.168.1.20"]\n')
    config = load_config(path, environ={})
    assert config.discovery.enabled is False
    assert config.discovery.interfaces == ("eth0", "192.168.1.20")
    config = load_config(environ={"VERISCOPE_DISCOVERY__INTERFACES": "eth0, wlan0"})
    assert config.discovery.interfaces == ("eth0", "wlan0")


@pytest.mark.parametrize(
    ("text", "key"),
    [("[discovery]\ninterfaces = 3\n", "discovery.interfaces"), ("[discovery]\nenabled = 1\n", "discovery.enabled")],
)
def test_bad_discovery_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key


def test_no_advertise_flag_turns_discovery_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import veriscope.device.server as server

    served: list[Config] = []

    async def fake_serve(config: Config, **_: object) -> int:
        served.append(config)
        return 0

    monkeypatch.setattr(server, "serve", fake_serve)
    assert cli.main(["serve", "--simulate", "--no-advertise"]) == 0
    assert cli.main(["serve", "--simulate"]) == 0
    assert [config.discovery.enabled for config in served] == [False, True]


# --- Advertising --------------------------------------------------------------------------------------------------


def _daemon(listen: str, *, enabled: bool = True) -> Any:
    """The parts of a started daemon that advertising reads."""
    config = Config().with_overrides(server={"listen": listen}, discovery={"enabled": enabled})
    bundle = SimpleNamespace(name="veriscope-demo", version="0.2.0")
    context = SimpleNamespace(device_id="VS-TEST-0002", hardware_model="veriscope-sim", bundle=bundle, simulated=True)
    return SimpleNamespace(config=config, context=context, port=50124, tls=False)


async def _resolve(name: str) -> AsyncServiceInfo | None:
    """A fresh resolve on loopback: only live responders answer a new cache."""
    browser = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        return info if await info.async_request(browser.zeroconf, 1500) else None
    finally:
        await browser.async_close()


async def test_advertiser_registers_updates_and_withdraws_on_loopback() -> None:
    advertiser = Advertiser(ANNOUNCEMENT, LOOPBACK)
    advertiser.start()
    try:
        assert await advertiser.wait_registered()
        info = await _resolve(ANNOUNCEMENT.instance_name)
        assert info is not None
        assert info.port == ANNOUNCEMENT.port
        assert info.parsed_addresses() == ["127.0.0.1"]
        assert info.server == ANNOUNCEMENT.host_name
        assert info.decoded_properties == ANNOUNCEMENT.properties()

        # A new active model is announced in place.
        await advertiser.update(replace(ANNOUNCEMENT, model_version="veriscope-demo@0.3.0"))
        info = await _resolve(ANNOUNCEMENT.instance_name)
        assert info is not None
        assert info.decoded_properties["mdl"] == "veriscope-demo@0.3.0"
    finally:
        await advertiser.close()
    assert await _resolve(ANNOUNCEMENT.instance_name) is None


async def test_start_advertising_announces_a_started_daemon() -> None:
    advertiser = start_advertising(_daemon("127.0.0.1:50124"))
    assert advertiser is not None
    try:
        assert await advertiser.wait_registered()
        assert advertiser.announcement == Announcement(
            device_id="VS-TEST-0002",
            hardware_model="veriscope-sim",
            software_version=discovery.__version__,
            api_version="v1",
            model_version="veriscope-demo@0.2.0",
            port=50124,
            addresses=("127.0.0.1",),
            tls=False,
            simulated=True,
        )
    finally:
        await advertiser.close()


async def test_failures_are_warnings_and_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="veriscope.device.discovery")
    assert start_advertising(_daemon("127.0.0.1:50124", enabled=False)) is None
    assert "disabled" in caplog.text

    # An interface address this host does not have: zeroconf cannot open its socket.
    advertiser = Advertiser(ANNOUNCEMENT, Reach(("127.0.0.1",), ("198.51.100.77",)))
    advertiser.start()
    assert await advertiser.wait_registered() is False
    await advertiser.update(ANNOUNCEMENT)  # a no-op once registration has failed
    await advertiser.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not advertising over mDNS on 198.51.100.77" in w for w in warnings), warnings

    # Closing while registration is still probing the network withdraws it cleanly.
    advertiser = Advertiser(ANNOUNCEMENT, LOOPBACK)
    advertiser.start()
    await advertiser.close()
    assert await _resolve(ANNOUNCEMENT.instance_name) is None


def test_a_unix_socket_listener_is_not_advertised(caplog: pytest.LogCaptureFixture) -> None:
    daemon = _daemon("127.0.0.1:50124")
    daemon.config = SimpleNamespace(
        server=SimpleNamespace(listen="unix:/run/veriscope.sock"), discovery=daemon.config.discovery
    )
    assert start_advertising(daemon) is None
    assert "unix socket" in caplog.text
