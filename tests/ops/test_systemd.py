"""The systemd unit and the sample environment file are code: check them.

- every Settings field has a line in systemd/tinypds.env.example, each commented line shows
  the real default, and the file loads as settings;
- the unit has the hardening the README promises and passes `systemd-analyze verify`
  (skipped, with the reason, where systemd-analyze is not installed).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinypds.config import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "tinypds.service"
ENV_EXAMPLE = ROOT / "systemd" / "tinypds.env.example"
LINE = re.compile(r"^(#?)(TINYPDS_[A-Z0-9_]+)=(.*)$")
SET_FOR_DEPLOYMENT = {"TINYPDS_HOSTNAME"}  # uncommented in the example on purpose


def _env_names() -> dict[str, str]:
    """Env variable -> Settings field, for every setting."""
    out = {}
    for f in dataclasses.fields(Settings):
        if f.name == "extra":
            continue
        out["TINYPDS_CONFIG" if f.name == "config_file" else env_name(f.name)] = f.name
    return out


def _example_lines() -> list[tuple[bool, str, str]]:
    out = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = LINE.match(line)
        if m:
            out.append((m.group(1) == "#", m.group(2), m.group(3)))
    return out


def test_env_example_lists_every_setting_once():
    names = [name for _, name, _ in _example_lines()]
    assert sorted(names) == sorted(set(names)), "a setting is listed twice"
    assert set(names) == set(_env_names()), (
        f"missing: {sorted(set(_env_names()) - set(names))}, unknown: {sorted(set(names) - set(_env_names()))}"
    )


def test_env_example_comments_show_the_defaults():
    defaults = Settings().describe()
    for commented, name, value in _example_lines():
        field = _env_names()[name]
        if not commented:
            assert name in SET_FOR_DEPLOYMENT, f"{name} is set in the example; comment it out"
            continue
        assert value == defaults[field], f"{name}: the example says {value!r}, the default is {defaults[field]!r}"


def test_env_example_loads_as_settings():
    env = {name: value for commented, name, value in _example_lines() if not commented}
    settings = load_settings(environ=env)
    assert settings.hostname == "pds.example.com"
    assert not settings.dev


def _directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_hardened():
    d = _directives()
    for key, value in {
        "User": "tinypds", "StateDirectory": "tinypds", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "UMask": "0077", "Restart": "on-failure", "KillSignal": "SIGTERM",
    }.items():
        assert d.get(key) == [value], f"{key}={d.get(key)}"
    assert "@system-service" in d["SystemCallFilter"]
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert d["CapabilityBoundingSet"] == [""]
    # the headless key store: the sealing secret arrives as the credential KeyStore looks for
    from tinypds.services.identity.keys import CREDENTIAL_NAME

    assert any(v.startswith(CREDENTIAL_NAME + ":") for v in d["LoadCredential"])
    env = dict(v.split("=", 1) for v in d["Environment"])
    assert env["TINYPDS_KEYRING_BACKEND"] == "file"
    assert env["TINYPDS_DATA_DIR"] == "/var/lib/tinypds"
    assert env["TINYPDS_KEY_FILE"].startswith("/var/lib/tinypds/")
    assert d["ExecStart"][0].endswith("tinypds serve")


@pytest.mark.parametrize("names", [("tinypds.service",), ("tinypds-backup.service", "tinypds-backup.timer")])
def test_systemd_analyze_verify(tmp_path, names):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (CI images with systemd run this check)")
    paths = []
    for name in names:
        # verify also checks that executables exist: point them at this checkout's interpreter
        text = (ROOT / "systemd" / name).read_text().replace("/opt/tinypds/venv/bin/tinypds serve",
                                                              f"{sys.executable} -m tinypds.cli serve")
        text = text.replace("/opt/tinypds/venv/bin/tinypds", f"{sys.executable} -m tinypds.cli")
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    out = subprocess.run([tool, "verify", *paths], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in names:
        assert name not in out.stderr, out.stderr  # no warnings about our units


def _unescape(value: str) -> str:
    """systemd's command-line escapes: %% -> %, $$ -> $ (our units use no other specifiers)."""
    return value.replace("%%", "%").replace("$$", "$")


def test_backup_service_commands_make_a_backup_and_prune_old_ones(tmp_path):
    """Run the backup unit's ExecStart/ExecStartPost as its shell would, against a live server."""
    from .conftest import server_env, start_server

    unit = (ROOT / "systemd" / "tinypds-backup.service").read_text()
    cmds = {k: _unescape(v) for k, v in (line.split("=", 1) for line in unit.splitlines()
                                          if line.startswith(("ExecStart=", "ExecStartPost=")))}
    server = start_server(tmp_path / "state")
    backups = tmp_path / "state" / "backups"
    backups.mkdir()
    old = backups / "tinypds-20000101T000000Z.sqlite"
    old.write_bytes(b"old")
    os.utime(old, (946684800, 946684800))
    kept = backups / "notes.txt"
    kept.write_text("not a backup")
    try:
        for key in ("ExecStart", "ExecStartPost"):
            cmd = cmds[key].replace("/opt/tinypds/venv/bin/tinypds", f"{sys.executable} -m tinypds.cli")
            cmd = cmd.replace("/var/lib/tinypds", str(tmp_path / "state"))
            argv = shlex.split(cmd)
            out = subprocess.run(argv, env=server_env({"TINYPDS_DATA_DIR": str(tmp_path / "state")}),
                                 cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, (key, out.stdout, out.stderr)
    finally:
        server.stop()
    made = sorted(p.name for p in backups.glob("tinypds-*.sqlite"))
    assert len(made) == 1 and re.fullmatch(r"tinypds-\d{8}T\d{6}Z\.sqlite", made[0]), made
    assert not old.exists() and kept.exists()


def test_admin_wrapper_matches_the_unit():
    """`tinypds-admin` runs CLI commands with the unit's user, settings and credential."""
    wrapper = (ROOT / "systemd" / "tinypds-admin").read_text()
    d = _directives()
    for value in d["Environment"]:
        if value.startswith("TINYPDS_"):
            assert f"Environment={value}" in wrapper, value
    assert f"LoadCredential={d['LoadCredential'][0]}" in wrapper
    assert f"EnvironmentFile={d['EnvironmentFile'][0]}" in wrapper
    assert "--uid=tinypds" in wrapper
