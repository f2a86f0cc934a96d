"""Where a proxied call may go: the `atproto-proxy` header (`DID#service_id`), the service
entry of a DID document, and an endpoint origin that is safe to call (https, no credentials,
no private or loopback address outside dev mode). Pure functions: no I/O.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping
from urllib.parse import urlsplit

from ...core import syntax as sx
from ...errors import InvalidRequest


def parse_proxy_header(value: str) -> tuple[str, str]:
    """`did:...#service_id` -> (did, service_id); InvalidRequest naming what is wrong."""
    value = value.strip()
    hash_at = value.find("#")
    if hash_at == 0:
        raise InvalidRequest("no did specified in proxy header")
    if hash_at == -1 or hash_at == len(value) - 1:
        raise InvalidRequest("no service id specified in proxy header")
    if value.find("#", hash_at + 1) != -1:
        raise InvalidRequest("invalid proxy header format")
    if " " in value:
        raise InvalidRequest("proxy header cannot contain spaces")
    did, service_id = value[:hash_at], value[hash_at + 1:]
    if not sx.is_valid_did(did):
        raise InvalidRequest("invalid DID in proxy header")
    return did, service_id


def service_endpoint(doc: Mapping[str, Any], did: str, service_id: str) -> str | None:
    """The endpoint of service `#service_id` in a DID document (ids may be relative or absolute)."""
    for entry in doc.get("service") or ():
        if not isinstance(entry, dict):
            continue
        sid = entry.get("id")
        if sid in ("#" + service_id, did + "#" + service_id) and isinstance(entry.get("serviceEndpoint"), str):
            return entry["serviceEndpoint"]
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_origin(url: str, dev: bool) -> str:
    """The origin of a service endpoint, refusing unsafe ones (InvalidRequest says why).

    https only, no credentials in the URL, no private/loopback IP literals; dev mode also
    allows http:// and loopback/private addresses (local test services).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise InvalidRequest(f"proxy target endpoint is not a valid URL: {url[:200]}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidRequest(f"proxy target endpoint must be an https URL: {url[:200]}")
    if parts.username or parts.password:
        raise InvalidRequest("proxy target endpoint must not carry credentials")
    if not dev:
        if parts.scheme != "https":
            raise InvalidRequest(f"proxy target endpoint must use https: {url[:200]}")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if (ip is not None and not ip.is_global) or _is_loopback(host):
            raise InvalidRequest(f"proxy target endpoint is not a public address: {host}")
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")
