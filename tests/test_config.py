"""Settings: precedence (overrides > env > TOML > defaults) and derived values."""

from __future__ import annotations

import pytest

from tinypds.config import ConfigError, load_settings


def test_local_hostname_follows_the_listening_port_unless_configured(tmp_path):
    s = load_settings({"data_dir": tmp_path, "port": 2650}, environ={})
    assert s.hostname == "localhost:2650" and s.service_did == "did:web:localhost%3A2650"
    s = load_settings({"data_dir": tmp_path, "port": 2650}, environ={"TINYPDS_HOSTNAME": "pds.example.com"})
    assert s.hostname == "pds.example.com" and s.public_url == "https://pds.example.com"
    assert load_settings({"data_dir": tmp_path}, environ={}).hostname == "localhost:2583"


def test_precedence_and_toml(tmp_path):
    (tmp_path / "tinypds.toml").write_text('hostname = "toml.example"\nport = 2700\n')
    s = load_settings({"data_dir": tmp_path}, environ={})
    assert (s.hostname, s.port) == ("toml.example", 2700)
    s = load_settings({"data_dir": tmp_path}, environ={"TINYPDS_PORT": "2701"})
    assert s.port == 2701
    s = load_settings({"data_dir": tmp_path, "port": 2702}, environ={"TINYPDS_PORT": "2701"})
    assert s.port == 2702


@pytest.mark.parametrize("env", [{"TINYPDS_PORT": "70000"}, {"TINYPDS_PORT": "many"}, {"TINYPDS_DEV": "maybe"},
                                 {"TINYPDS_PLC_URL": "ftp://plc"}])
def test_bad_settings_name_the_setting(tmp_path, env):
    with pytest.raises(ConfigError) as info:
        load_settings({"data_dir": tmp_path}, environ=env)
    assert "TINYPDS_" in str(info.value) or "URL" in str(info.value)


def test_unknown_toml_key_is_refused(tmp_path):
    (tmp_path / "tinypds.toml").write_text("hostnme = 'typo'\n")
    with pytest.raises(ConfigError, match="unknown setting 'hostnme'"):
        load_settings({"data_dir": tmp_path}, environ={})
