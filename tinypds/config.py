"""Settings: one frozen object from TINYPDS_* env vars and an optional TOML file.

The only module that reads os.environ. Precedence: explicit overrides (CLI flags) >
environment > TOML file (`TINYPDS_CONFIG`, or `<data>/tinypds.toml` if present) >
defaults. Imports nothing from tinypds. Secrets never live here (keys are in the
keyring); `describe()` masks anything secret-looking anyway.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting and the fix."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    # public identity of this server
    hostname: str = "localhost:2583"  # public host[:port] users and relays reach
    dev: bool = False  # http:// endpoints, offline-friendly defaults
    # listening socket
    host: str = "127.0.0.1"
    port: int = 2583
    # identity
    plc_url: str = "https://plc.directory"
    handle_domains: tuple[str, ...] = ()  # handle suffixes offered to new accounts (e.g. ".test")
    # limits
    blob_max_bytes: int = 100 * 1024 * 1024
    blob_temp_ttl_seconds: int = 3600
    write_rate_limit: int = 1  # 1 = relay-safe budget on; 0 = off
    max_request_bytes: int = 5 * 1024 * 1024  # JSON bodies (blobs/CARs are streamed separately)
    # sync
    relays: tuple[str, ...] = ("https://bsky.network",)
    event_retention_hours: int = 72
    crawl_interval_seconds: int = 1200
    firehose_max_lag: int = 1000  # frames a live subscriber may fall behind before ConsumerTooSlow
    firehose_max_subscribers: int = 128  # firehose websockets at once (capped apart from other requests)
    # HTTP server (uvicorn): proxies whose X-Forwarded-For/-Proto are believed (addresses or CIDRs),
    # requests handled at once (firehose subscribers included), idle keep-alive seconds
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    max_concurrency: int = 1024
    keep_alive_seconds: int = 75
    # a client that sends no request-body bytes, or takes no response/firehose bytes, for this
    # long is dropped (it would otherwise hold a worker, a read snapshot or memory)
    client_stall_seconds: int = 30
    # network health watcher (services/health.py): seconds between checks (0 = off) and how long
    # a relay may lag our rev before a crawl is requested
    health_interval: int = 300
    health_lag_seconds: int = 300
    # Prometheus metrics at /metrics: "off", "loopback" (only from 127.0.0.1/::1) or "on"
    metrics: str = "off"
    # proxy targets
    appview_url: str = "https://api.bsky.app"
    appview_did: str = "did:web:api.bsky.app"
    chat_url: str = "https://api.bsky.chat"
    chat_did: str = "did:web:api.bsky.chat"
    # email (services/email.py): where tokens are sent; empty smtp_url = none are sent
    # (the owner reads them with `tinypds account email-token`)
    smtp_url: str = ""  # smtp://[user:password@]host[:port] (STARTTLS if offered) or smtps://...
    email_from: str = ""  # From: address; default noreply@<hostname>
    # sessions
    access_token_seconds: int = 2 * 3600
    refresh_token_seconds: int = 90 * 24 * 3600
    # keys: keyring backend ("auto", "system", "file") and the sealed-file location
    keyring_backend: str = "auto"
    key_file: Path | None = None
    # systemd's $CREDENTIALS_DIRECTORY (LoadCredential=tinypds-keys:...): the sealing secret
    credentials_dir: Path | None = None
    # logging
    log_level: str = "info"
    config_file: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- derived -------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.data_dir / "tinypds.sqlite"

    @property
    def public_url(self) -> str:
        scheme = "http" if self.dev else "https"
        return f"{scheme}://{self.hostname}"

    @property
    def service_did(self) -> str:
        return "did:web:" + self.hostname.replace(":", "%3A")

    @property
    def local_only(self) -> bool:
        """The public hostname is a loopback name: `tinypds serve` runs such a server in dev
        mode (http, keys in DATA/keys.json), and every CLI command must see it the same way."""
        host = self.hostname
        bare = host[1:].split("]", 1)[0] if host.startswith("[") else self.bare_hostname
        bare = bare.lower()
        return bare in ("localhost", "127.0.0.1", "::1") or bare.endswith(".localhost")

    @property
    def dev_like(self) -> bool:
        return self.dev or self.local_only

    @property
    def bare_hostname(self) -> str:
        return self.hostname.rsplit(":", 1)[0] if self.hostname.count(":") == 1 else self.hostname

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, str]:
        """Effective settings as strings, secrets masked (for `tinypds config check`)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if isinstance(v, str) and v and any(s in f.name for s in ("secret", "password", "token")):
                v = "***"
            if v is None:
                v = ""
            out[f.name] = ",".join(_mask_url(x) for x in v) if isinstance(v, tuple) else _mask_url(str(v))
        return out


def _mask_url(value: str) -> str:
    """Hide a password in a URL's user info (https://user:secret@host -> https://user:***@host)."""
    scheme, sep, rest = value.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        userinfo, _, host = rest.partition("@")
        if ":" in userinfo:
            return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
    return value


def _coerce(name: str, typ: Any, raw: Any) -> Any:
    t = str(typ)
    try:
        if t in ("bool", "<class 'bool'>"):
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if t in ("int", "<class 'int'>"):
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if t.startswith("tuple"):
            if isinstance(raw, (list, tuple)):
                return tuple(str(x).strip() for x in raw if str(x).strip())
            return tuple(x.strip() for x in str(raw).split(",") if x.strip())
        if "Path" in t:
            return Path(str(raw)).expanduser() if str(raw) else None
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {exc}") from exc


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "extra"}


def env_name(field_name: str) -> str:
    return "TINYPDS_" + field_name.upper()


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from (in order of precedence) overrides, env, TOML file, defaults."""
    env = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}

    data_dir = overrides.get("data_dir") or env.get("TINYPDS_DATA_DIR") or env.get("TINYPDS_DATA") or "data"
    config_file = overrides.get("config_file") or env.get("TINYPDS_CONFIG")
    if config_file is None:
        candidate = Path(str(data_dir)) / "tinypds.toml"
        config_file = candidate if candidate.is_file() else None
    if config_file is not None:
        path = Path(str(config_file)).expanduser()
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist (TINYPDS_CONFIG)") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        table = doc.get("tinypds", doc)
        for key, raw in table.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[name] = _coerce(name, _FIELDS[name].type, raw)
        values["config_file"] = path

    if env.get("CREDENTIALS_DIRECTORY"):  # set by systemd when the unit loads credentials
        values["credentials_dir"] = Path(env["CREDENTIALS_DIRECTORY"])
    for name, f in _FIELDS.items():
        raw = env.get(env_name(name))
        if raw is not None and name not in ("config_file",):
            values[name] = _coerce(env_name(name), f.type, raw)

    for name, raw in overrides.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, _FIELDS[name].type, raw)

    values["data_dir"] = Path(str(values.get("data_dir", data_dir))).expanduser()
    if "hostname" not in values and values.get("port"):
        # no public hostname configured: a local server is reached where it listens
        values["hostname"] = f"localhost:{values['port']}"
    settings = Settings(**values)
    problems = check_settings(settings)
    fatal = [p for p in problems if p.startswith("error:")]
    if fatal:
        raise ConfigError("; ".join(p[len("error: "):] for p in fatal))
    return settings


def check_settings(s: Settings) -> list[str]:
    """Human-readable problems, each prefixed 'error:' or 'warning:'."""
    out = []
    if not (0 < s.port < 65536):
        out.append(f"error: TINYPDS_PORT={s.port} is not a TCP port")
    if s.blob_max_bytes <= 0:
        out.append("error: TINYPDS_BLOB_MAX_BYTES must be positive")
    if s.event_retention_hours < 1:
        out.append("error: TINYPDS_EVENT_RETENTION_HOURS must be at least 1")
    if s.keyring_backend not in ("auto", "system", "file"):
        out.append("error: TINYPDS_KEYRING_BACKEND must be auto, system or file")
    if s.metrics not in ("off", "loopback", "on"):
        out.append("error: TINYPDS_METRICS must be off, loopback or on")
    if s.health_interval < 0 or s.health_lag_seconds < 0:
        out.append("error: TINYPDS_HEALTH_INTERVAL and TINYPDS_HEALTH_LAG_SECONDS must not be negative")
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            out.append(f"error: TINYPDS_TRUSTED_PROXIES: {proxy!r} is not an IP address or CIDR")
    if s.client_stall_seconds < 1:
        out.append("error: TINYPDS_CLIENT_STALL_SECONDS must be at least 1")
    if s.firehose_max_subscribers < 1 or s.max_concurrency <= s.firehose_max_subscribers:
        out.append("error: TINYPDS_MAX_CONCURRENCY must be larger than TINYPDS_FIREHOSE_MAX_SUBSCRIBERS (>= 1)")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        out.append("error: TINYPDS_LOG_LEVEL must be debug, info, warning or error")
    if not s.dev and (s.hostname.startswith("localhost") or s.hostname.startswith("127.")):
        out.append("warning: TINYPDS_HOSTNAME is a loopback name; other servers cannot reach this PDS")
    if s.smtp_url and not s.smtp_url.startswith(("smtp://", "smtps://")):
        out.append("error: TINYPDS_SMTP_URL must start with smtp:// or smtps://")
    for url in (s.plc_url, s.appview_url, s.chat_url, *s.relays):
        if not url.startswith(("http://", "https://")):
            out.append(f"error: {url!r} is not an http(s) URL")
    return out
