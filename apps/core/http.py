"""Outbound HTTP with an SSRF guard: the only way Hermes calls a URL that a user (or a peer) gave it.

    from apps.core.http import guarded_async_client, guarded_client, OutboundBlocked

    async with guarded_async_client() as client:      # an httpx.AsyncClient
        response = await client.get(url)               # may raise OutboundBlocked
    with guarded_client(timeout=5) as client:          # an httpx.Client (Celery jobs, federation)
        client.post(url, json=body)

What is refused (unless the host or address is in `settings.HERMES_SSRF_ALLOWLIST`): every address that is not
globally routable — loopback, private (RFC 1918, fc00::/7), link-local, multicast, unspecified, reserved and
shared (100.64/10) ranges, and IPv4 hidden inside IPv6 (::ffff:10.0.0.1). Cloud metadata endpoints
(169.254.169.254, fd00:ec2::254, …) are refused even when allowlisted: no legitimate agent lives there.
Only http and https URLs are accepted.

How: the check runs inside the connection pool's network backend, at the moment a TCP connection is opened. The
backend resolves the name once, checks every address it got, and connects to exactly the address it checked, so
a DNS answer that changes between check and connect (DNS rebinding) cannot slip through, and every redirect hop
is checked too. The URL, the Host header and TLS (SNI and certificate verification) keep the original name.
Environment proxies are ignored (`trust_env=False`): a proxy would make the checked address the proxy's.

Allowlist entries are host names (exact, case-insensitive), IP addresses or CIDR networks; the setting is read
on every connection, so tests may change it with pytest-django's `settings` fixture.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance-metadata services: a request there can leak cloud credentials, so they are never reachable.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
ALLOWED_SCHEMES = frozenset({"http", "https"})

# connect: a healthy agent accepts within seconds; read: SSE streams send at least a keep-alive well within this.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=5.0)


class OutboundBlocked(Exception):
    """A request the SSRF guard refused. `rule` is a stable name for the API error details."""

    def __init__(self, message: str, *, rule: str, host: str, address: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.host = host
        self.address = address


@dataclass(frozen=True)
class Allowlist:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return _normalize_host(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def current_allowlist() -> Allowlist:
    return Allowlist.parse(getattr(settings, "HERMES_SSRF_ALLOWLIST", []))


def _normalize_host(host: str) -> str:
    return host.strip().lower().strip("[]").rstrip(".")


def address_rule(address: IPAddress) -> str | None:
    """The name of the rule that refuses `address`, or None when it is globally routable."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return address_rule(embedded)
    if address in METADATA_ADDRESSES:
        return "metadata"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non_global"
    return None


_RULE_TEXT = {
    "metadata": "a cloud metadata endpoint",
    "unspecified": "an unspecified address",
    "loopback": "a loopback address",
    "link_local": "a link-local address",
    "multicast": "a multicast address",
    "private": "a private network address",
    "reserved": "a reserved address",
    "non_global": "not a globally routable address",
}


def check_address(host: str, address: IPAddress, allowlist: Allowlist) -> None:
    rule = address_rule(address)
    if rule is None:
        return
    if rule != "metadata" and (allowlist.allows_host(host) or allowlist.allows_address(address)):
        return
    hint = "" if rule == "metadata" else " Add the host to HERMES_SSRF_ALLOWLIST if it is trusted."
    raise OutboundBlocked(
        f"Refusing to connect to {host} ({address}): {_RULE_TEXT[rule]}.{hint}",
        rule=rule,
        host=host,
        address=str(address),
    )


def check_host_name(host: str) -> None:
    if _normalize_host(host) in METADATA_HOSTS:
        raise OutboundBlocked(f"Refusing to connect to {host}: a cloud metadata host.", rule="metadata", host=host)


def check_url(url: str | httpx.URL) -> httpx.URL:
    """Reject what can be rejected without DNS (scheme, missing host, metadata names, non-public IP literals);
    return the parsed URL. Names are checked when a connection is opened."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        # httpx's reason names the part it could not read ("Invalid IPv4 address: '0251.0376.0251.0376'").
        raise OutboundBlocked(f"Not a valid URL: {str(url)[:200]!r} ({exc}).", rule="invalid_url", host="") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise OutboundBlocked(
            f"Only http and https URLs are allowed, not {parsed.scheme or 'none'!r}.", rule="scheme", host=parsed.host
        )
    if not parsed.host:
        raise OutboundBlocked(f"The URL {url!s} has no host.", rule="invalid_url", host="")
    check_host_name(parsed.host)
    literal = _literal(parsed.host)
    if literal is not None:
        check_address(parsed.host, literal, current_allowlist())
    return parsed


def _literal(host: str) -> IPAddress | None:
    normalized = _normalize_host(host)
    try:
        return ipaddress.ip_address(normalized)
    except ValueError:
        pass
    try:
        # The legacy IPv4 spellings the system resolver also reads as addresses (2130706433, 0x7f000001,
        # 127.1): checked here, before any DNS, so that check_url (a peer or agent URL being saved) refuses
        # them as it refuses 127.0.0.1, instead of only at connect time.
        return ipaddress.IPv4Address(socket.inet_aton(normalized))
    except OSError:
        return None


def _checked_addresses(host: str, infos: Iterable[tuple[Any, ...]], allowlist: Allowlist) -> list[str]:
    """Every address a name resolves to must pass: one bad record refuses the host (no mixed answers)."""
    addresses: list[str] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        check_address(host, address, allowlist)
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise OutboundBlocked(f"{host} did not resolve to any address.", rule="unresolvable", host=host)
    return addresses


def _unresolvable(host: str, exc: Exception) -> httpcore.ConnectError:
    return httpcore.ConnectError(f"Cannot resolve {host}: {exc}")


class GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects to the checked address (see module docstring)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        check_host_name(host)
        allowlist = current_allowlist()
        literal = _literal(host)
        if literal is not None:
            check_address(host, literal, allowlist)
            return [str(literal)]
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise _unresolvable(host, exc) from exc
        return _checked_addresses(host, infos, allowlist)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise OutboundBlocked("Unix sockets are not reachable from outbound HTTP.", rule="unix_socket", host="")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedSyncBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()

    def _resolve(self, host: str, port: int) -> list[str]:
        check_host_name(host)
        allowlist = current_allowlist()
        literal = _literal(host)
        if literal is not None:
            check_address(host, literal, allowlist)
            return [str(literal)]
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _unresolvable(host, exc) from exc
        return _checked_addresses(host, infos, allowlist)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for address in self._resolve(host, port):
            try:
                return self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise OutboundBlocked("Unix sockets are not reachable from outbound HTTP.", rule="unix_socket", host="")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedAsyncTransport(httpx.AsyncHTTPTransport):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # httpx builds the httpcore pool without a way to pass a network backend; swapping it here is the one
        # hook that makes the check and the connect use the same resolved address.
        self._pool._network_backend = GuardedAsyncBackend()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_url(request.url)  # scheme and metadata names fail before any DNS or socket work
        return await super().handle_async_request(request)


class GuardedTransport(httpx.HTTPTransport):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool._network_backend = GuardedSyncBackend()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        check_url(request.url)
        return super().handle_request(request)


def _client_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    for forbidden in ("transport", "proxy", "mounts", "trust_env"):
        if forbidden in kwargs:
            raise TypeError(f"{forbidden!r} would bypass the SSRF guard")
    kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
    kwargs.setdefault("follow_redirects", False)
    kwargs.setdefault("headers", {}).setdefault("User-Agent", f"Hermes/{settings.HERMES_VERSION}")
    return kwargs


def guarded_async_client(**kwargs: Any) -> httpx.AsyncClient:
    """An httpx.AsyncClient whose every connection passes the SSRF guard. kwargs go to httpx.AsyncClient."""
    return httpx.AsyncClient(transport=GuardedAsyncTransport(), trust_env=False, **_client_kwargs(kwargs))


def guarded_client(**kwargs: Any) -> httpx.Client:
    """The synchronous twin of `guarded_async_client` (Celery jobs, federation delivery)."""
    return httpx.Client(transport=GuardedTransport(), trust_env=False, **_client_kwargs(kwargs))


# --- Who is the client ----------------------------------------------------------------------------------------


def in_networks(address: str, networks: Iterable[str]) -> bool:
    """Whether `address` is one of `networks` (addresses or CIDR networks); False for anything unparsable."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    for entry in networks:
        try:
            if ip in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def header_text(value: str | None) -> str | None:
    """A request header as the client wrote it. WSGI hands header values over decoded as latin-1, so UTF-8 text
    (`dëmo`) turned into mojibake (`dÃ«mo`) in the messages that echo it back."""
    if not value:
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not latin-1 text already (ASGI), or not UTF-8 bytes: as it came
        return value


def client_address(remote_addr: str | None, forwarded_for: str | None) -> str | None:
    """The client's address: the server's peer (REMOTE_ADDR), or — when that peer is one of HERMES_TRUSTED_PROXIES
    — the right-most X-Forwarded-For entry that is not a trusted proxy. Entries left of it are whatever the client
    wrote, so they are never believed."""
    if not remote_addr:
        return None
    trusted = settings.HERMES_TRUSTED_PROXIES
    if not trusted or not forwarded_for or not in_networks(remote_addr, trusted):
        return remote_addr
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if not in_networks(hop, trusted):
            return hop
    return remote_addr


def request_client_address(request: Any) -> str | None:
    return client_address(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))
