"""The SSRF guard refuses non-public addresses unless allowlisted, and connects to the address it checked."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import pytest

from apps.core.http import (
    Allowlist,
    OutboundBlocked,
    address_rule,
    check_url,
    guarded_async_client,
    guarded_client,
)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"host={self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_allowlist(settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = []


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.10:8080/", "private"),
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://169.254.10.1/", "link_local"),
        ("http://100.64.0.1/", "non_global"),
    ],
)
def test_non_public_addresses_are_refused(no_allowlist: None, url: str, rule: str) -> None:
    with guarded_client() as client, pytest.raises(OutboundBlocked) as exc_info:
        client.get(url)
    assert exc_info.value.rule == rule
    assert "Refusing" in str(exc_info.value)


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://10.0.0.1/", "http://127.0.0.1/"])
def test_async_client_refuses_the_acceptance_addresses(no_allowlist: None, url: str) -> None:
    async def fetch() -> None:
        async with guarded_async_client() as client:
            await client.get(url)

    with pytest.raises(OutboundBlocked):
        anyio.run(fetch)


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.0.0.1"])
def test_odd_spellings_of_loopback_are_refused(no_allowlist: None, host: str) -> None:
    """Not IP literals to Python, but the resolver turns them into 127.0.0.1, and the resolved address is checked."""
    with guarded_client() as client, pytest.raises(OutboundBlocked) as exc_info:
        client.get(f"http://{host}/")
    assert exc_info.value.rule == "loopback" and exc_info.value.address == "127.0.0.1"


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.0.0.1", "0x7f000001"])
def test_odd_spellings_are_refused_without_dns(no_allowlist: None, host: str) -> None:
    """check_url (what saving an agent or peer URL runs) reads them as the resolver would."""
    with pytest.raises(OutboundBlocked) as exc_info:
        check_url(f"http://{host}:8000/")
    assert exc_info.value.rule == "loopback" and exc_info.value.address == "127.0.0.1"


def test_octal_ip_spelling_never_reaches_a_socket(no_allowlist: None) -> None:
    with guarded_client() as client, pytest.raises((OutboundBlocked, httpx.InvalidURL)):
        client.get("http://0177.0.0.1/")


def test_names_resolving_to_loopback_are_refused(no_allowlist: None, loopback_server: int) -> None:
    with guarded_client() as client, pytest.raises(OutboundBlocked) as exc_info:
        client.get(f"http://localhost:{loopback_server}/")
    assert exc_info.value.rule == "loopback"


def test_metadata_stays_refused_even_when_allowlisted(settings: Any) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["169.254.0.0/16", "169.254.169.254", "metadata.google.internal"]
    with guarded_client() as client:
        with pytest.raises(OutboundBlocked) as exc_info:
            client.get("http://169.254.169.254/")
        assert exc_info.value.rule == "metadata"
        with pytest.raises(OutboundBlocked):
            client.get("http://metadata.google.internal/computeMetadata/v1/")


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd"])
def test_only_http_schemes(url: str) -> None:
    with pytest.raises(OutboundBlocked) as exc_info:
        check_url(url)
    assert exc_info.value.rule == "scheme"


def test_allowlisted_loopback_works_sync_and_async(settings: Any, loopback_server: int) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    with guarded_client() as client:
        assert client.get(f"http://127.0.0.1:{loopback_server}/").text == f"host=127.0.0.1:{loopback_server}"

    async def fetch() -> str:
        async with guarded_async_client() as client:
            return (await client.get(f"http://127.0.0.1:{loopback_server}/")).text

    assert anyio.run(fetch) == f"host=127.0.0.1:{loopback_server}"


def test_allowlist_by_host_name(settings: Any, loopback_server: int) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["LocalHost"]
    with guarded_client() as client:
        assert client.get(f"http://localhost:{loopback_server}/").status_code == 200


def test_connects_to_the_checked_address_keeping_the_host_name(
    settings: Any, loopback_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One resolution per connection: the address that passed the check is the one dialled (no rebinding window),
    while the URL and Host header keep the name."""
    answers = iter(["127.0.0.1", "10.9.9.9"])
    calls: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "agent.example":  # the socket layer resolving the literal we dial
            return real_getaddrinfo(host, port, *args, **kwargs)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.0/8"]
    with guarded_client() as client:
        response = client.get(f"http://agent.example:{loopback_server}/")
        assert response.text == f"host=agent.example:{loopback_server}"
        assert calls == ["agent.example"]
    # The next connection resolves again and the rebound private answer is refused.
    with guarded_client() as client, pytest.raises(OutboundBlocked) as exc_info:
        client.get(f"http://agent.example:{loopback_server}/")
    assert exc_info.value.address == "10.9.9.9"


def test_one_private_record_refuses_the_host(no_allowlist: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with guarded_client() as client, pytest.raises(OutboundBlocked) as exc_info:
        client.get("http://mixed.example/")
    assert exc_info.value.rule == "private"


def test_unresolvable_host_is_a_connect_error(no_allowlist: None) -> None:
    with guarded_client() as client, pytest.raises(httpx.ConnectError):
        client.get("http://does-not-exist.invalid/")


def test_clients_refuse_bypass_options() -> None:
    with pytest.raises(TypeError):
        guarded_client(proxy="http://proxy.example:3128")


def test_rules_and_allowlist_parsing() -> None:
    import ipaddress

    assert address_rule(ipaddress.ip_address("8.8.8.8")) is None
    assert address_rule(ipaddress.ip_address("224.0.0.1")) == "multicast"
    assert address_rule(ipaddress.ip_address("2002:0a00:0001::1")) == "private"  # 6to4 wrapping 10.0.0.1
    allow = Allowlist.parse(["10.0.0.0/8", " Agents.Internal. ", "[::1]", ""])
    assert allow.allows_host("agents.internal")
    assert allow.allows_address(ipaddress.ip_address("10.1.2.3"))
    assert allow.allows_address(ipaddress.ip_address("::1"))
    assert not allow.allows_address(ipaddress.ip_address("11.0.0.1"))
