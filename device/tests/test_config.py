from pathlib import Path

import pytest

from veriscope.device.config import Config, load_config
from veriscope.device.errors import ConfigError


def test_defaults_are_valid() -> None:
    assert load_config(environ={}) == Config()


def test_file_then_env_override(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:7000"\n[camera]\nwidth = 1014\n')
    config = load_config(path, environ={"VERISCOPE_SERVER__LISTEN": "127.0.0.1:7001", "VERISCOPE_TOKEN": "x"})
    assert config.server.listen == "127.0.0.1:7001"
    assert config.camera.width == 1014


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[camera]\nwidth = 'wide'\n", "camera.width"),
        ("[camera]\nwidth = 10\n", "camera.width"),
        ("[camera]\nkind = 'webcam'\n", "camera.kind"),
        ("[server]\nlisten = 'nowhere'\n", "server.listen"),
        ("[server]\nlisten = 'nowhere'\n", "server.listen"),
        ("[sever]\nlisten = '127.0.0.1:1'\n", "sever"),
        ("[scan]\nmax_upload_bytes = true\n", "scan.max_upload_bytes"),
        ("camera = 3\n", "camera"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key
    assert key in str(info.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})


def test_env_values_parse_as_toml() -> None:
    config = load_config(environ={"VERISCOPE_MODEL__NUM_THREADS": "4", "VERISCOPE_DEVICE__ID": "VS-1"})
    assert config.model.num_threads == 4
    assert config.device.id == "VS-1"
