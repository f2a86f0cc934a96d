"""Outgoing HTTP that can only reach public addresses (SSRF safety), for any service.

Owns the connection backend that resolves the host itself, refuses unless every resolved
address is public, and dials the checked IP — so the address that is checked is the one
that is dialled (no DNS-rebinding gap) while TLS still verifies the hostname (httpcore
sends SNI and checks the certificate against the URL's host). Used by OAuth client-metadata
fetches and by the XRPC proxy outside dev mode. No HTTP-server types. httpx/httpcore are
imported on first use (an idle server never loads them), so the backend class is built then.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from typing import TYPE_CHECKING, Any, Awaitable, Callable

if TYPE_CHECKING:
    import httpx

Resolver = Callable[[str, int], Awaitable[list[str]]]


def is_public_address(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


@functools.cache
def public_only_backend_class() -> type:
    """The PublicOnlyBackend class (an httpcore network backend), defined on first use."""
    import httpcore

    class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
        """Resolves the host itself, refuses unless every address is public, dials the checked IP."""

        def __init__(self, resolver: Resolver = system_resolver):
            self._resolver = resolver
            self._inner = httpcore.AnyIOBackend()

        async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
            try:
                addresses = await asyncio.wait_for(self._resolver(host, port), timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}") from exc
            if not addresses or not all(is_public_address(a) for a in addresses):
                raise httpcore.ConnectError(f"{host} resolves to a non-public address")
            return await self._inner.connect_tcp(addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options)

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    return PublicOnlyBackend


def public_only_transport(resolver: Resolver = system_resolver, max_connections: int = 10,
                          max_keepalive: int | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections only ever reach public addresses."""
    import httpcore
    import httpx

    transport = httpx.AsyncHTTPTransport(trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(  # the documented pool, with our connection backend
        ssl_context=httpx.create_ssl_context(), max_connections=max_connections,
        max_keepalive_connections=max_keepalive, network_backend=public_only_backend_class()(resolver),
    )
    return transport


def safe_http_client(resolver: Resolver = system_resolver, timeout: float = 5.0) -> httpx.AsyncClient:
    """An httpx client that only reaches public addresses and never follows redirects."""
    import httpx

    return httpx.AsyncClient(transport=public_only_transport(resolver), timeout=timeout,
                             follow_redirects=False, trust_env=False)
