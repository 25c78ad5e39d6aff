"""Fetching agent cards from servers that misbehave: slow ones (the whole fetch has a deadline), ones answering an
error, and cards naming an interface the SSRF guard refuses. Through the API, as a person registering sees it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from apps.agents import cards
from apps.agents.models import Agent
from tests.agents.conftest import CardServer, v1_card
from tests.servers import QuietHandler

pytestmark = pytest.mark.django_db

# The deadline the tests run with: long enough for loopback, short enough to keep each test near a second.
DEADLINE = 1.0


class SlowCardServer:
    """A loopback server whose routes are functions writing the response themselves, as slowly as they like.

    `stop` ends every handler still trickling when the test is over (the client hung up long before)."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[QuietHandler], None]] = {}
        self.stop = threading.Event()
        routes = self.routes

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                route = routes.get(self.path)
                try:
                    if route is None:
                        self.reply(404, b"not found")
                    else:
                        route(self)
                except OSError:  # the client gave up (as it should) and closed the connection
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Handlers may still be sleeping at teardown: do not join them, `stop` wakes them.
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def pause(self, seconds: float) -> None:
        """Sleep in a handler; a handler told to stop raises, as a write to the gone client would."""
        if self.stop.wait(seconds):
            raise ConnectionAbortedError("test over")

    def trickle_body(self, body: bytes, pieces: int, interval: float) -> Callable[[QuietHandler], None]:
        """A 200 whose headers come at once and whose (valid) body comes in `pieces`, one every `interval` s."""

        def route(handler: QuietHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.flush()
            size = -(-len(body) // pieces)
            for start in range(0, len(body), size):
                self.pause(interval)
                handler.wfile.write(body[start : start + size])
                handler.wfile.flush()

        return route

    def trickle_headers(self, interval: float) -> Callable[[QuietHandler], None]:
        """A status line, then header bytes one every `interval` s: no body is ever reached."""

        def route(handler: QuietHandler) -> None:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for byte in b"X-Slow: " + b"a" * 1000:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                self.pause(interval)

        return route

    def delayed(self, seconds: float, status: int, body: bytes, location: str = "") -> Callable[[QuietHandler], None]:
        """A whole response after `seconds` (each one quick by httpx's per-read timeouts)."""

        def route(handler: QuietHandler) -> None:
            self.pause(seconds)
            if location:
                handler.send_response(status)
                handler.send_header("Location", location)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
            else:
                handler.reply(status, body)

        return route


@pytest.fixture
def slow_server(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowCardServer]:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    monkeypatch.setattr(cards, "CARD_DEADLINE", DEADLINE)
    server = SlowCardServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.server.shutdown()
    server.server.server_close()


def _register(client_for: Any, user: Any, url: str) -> tuple[Any, float]:
    started = time.monotonic()
    response = client_for(user).post("/api/v1/agents", {"url": url}, format="json")
    return response, time.monotonic() - started


def _card_bytes(base: str) -> bytes:
    return json.dumps(v1_card(base)).encode()


def test_a_card_trickled_past_the_deadline_is_refused_in_time(
    slow_server: SlowCardServer, org: Any, alice: Any, client_for: Any
) -> None:
    """25 pieces, each well within httpx's read timeout: before, the card was registered once the last arrived."""
    route = slow_server.trickle_body(_card_bytes(slow_server.base), pieces=25, interval=DEADLINE / 5)
    slow_server.routes["/.well-known/agent-card.json"] = route
    response, elapsed = _register(client_for, alice, slow_server.base)
    assert response.status_code == 400, response.data
    error = response.json()["error"]
    assert error["code"] == "card_unreachable"
    assert error["message"] == (
        f"Fetching the agent card from {slow_server.base}/.well-known/agent-card.json took longer than 1 s."
    )
    assert DEADLINE <= elapsed < DEADLINE + 1.5  # the trickle alone would take 5 s
    assert not Agent.objects.for_org(org).exists()


def test_headers_trickled_byte_by_byte_are_refused_in_time(
    slow_server: SlowCardServer, org: Any, alice: Any, client_for: Any
) -> None:
    slow_server.routes["/card.json"] = slow_server.trickle_headers(interval=0.05)
    response, elapsed = _register(client_for, alice, f"{slow_server.base}/card.json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "card_unreachable"
    assert "took longer than 1 s" in response.json()["error"]["message"]
    assert elapsed < DEADLINE + 1.5


def test_the_deadline_covers_the_fallback_and_redirects_together(
    slow_server: SlowCardServer, org: Any, alice: Any, client_for: Any
) -> None:
    """Each answer comes within the deadline; agent-card.json (404), a redirect and agent.json together do not."""
    step = DEADLINE * 0.4
    slow_server.routes["/.well-known/agent-card.json"] = slow_server.delayed(step, 404, b"no")
    slow_server.routes["/.well-known/agent.json"] = slow_server.delayed(step, 302, b"", location="/moved.json")
    slow_server.routes["/moved.json"] = slow_server.delayed(step, 200, _card_bytes(slow_server.base))
    response, elapsed = _register(client_for, alice, slow_server.base)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "card_unreachable"
    # The URL being fetched when time ran out: the fallback (the redirect is followed under its name).
    assert error["message"] == (
        f"Fetching the agent card from {slow_server.base}/.well-known/agent.json took longer than 1 s."
    )
    assert elapsed < DEADLINE + 1.5
    assert not Agent.objects.for_org(org).exists()


def test_a_slow_card_within_the_deadline_is_registered(
    slow_server: SlowCardServer, org: Any, alice: Any, client_for: Any
) -> None:
    route = slow_server.trickle_body(_card_bytes(slow_server.base), pieces=4, interval=DEADLINE / 10)
    slow_server.routes["/.well-known/agent-card.json"] = route
    response, _ = _register(client_for, alice, slow_server.base)
    assert response.status_code == 201, response.data
    assert Agent.objects.for_org(org).get().name == "Weather Bot"


def test_a_refused_interface_url_names_the_rule_like_a_refused_url(
    card_server: CardServer, org: Any, alice: Any, client_for: Any
) -> None:
    """The interface refusal had `details: {}` while the same address given directly named rule, host, address."""
    interface = {"url": "http://10.1.2.3/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
    card_server.serve("/.well-known/agent-card.json", v1_card(card_server.base, supportedInterfaces=[interface]))
    response, _ = _register(client_for, alice, card_server.base)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "card_invalid"  # the card is wrong, not the URL the caller gave
    assert "a private network address" in error["message"]
    direct, _ = _register(client_for, alice, "http://10.1.2.3/")
    assert direct.json()["error"]["code"] == "ssrf_blocked"
    assert direct.json()["error"]["details"] == {"rule": "private", "host": "10.1.2.3", "address": "10.1.2.3"}
    assert error["details"] == {"field": "supportedInterfaces", **direct.json()["error"]["details"]}
    assert not Agent.objects.for_org(org).exists()


def test_a_server_error_is_not_called_a_missing_card(
    card_server: CardServer, org: Any, alice: Any, client_for: Any
) -> None:
    card_server.serve("/.well-known/agent-card.json", b"oops", status=500)
    response, _ = _register(client_for, alice, card_server.base)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "card_unreachable",
        "message": "The server answered with an error instead of the agent card: "
        f"{card_server.base}/.well-known/agent-card.json (HTTP 500).",
        "details": {"tried": [f"{card_server.base}/.well-known/agent-card.json (HTTP 500)"]},
    }


def test_a_server_error_on_the_fallback_also_names_the_missing_card(
    card_server: CardServer, org: Any, alice: Any, client_for: Any
) -> None:
    card_server.serve("/.well-known/agent.json", b"oops", status=503)
    response, _ = _register(client_for, alice, card_server.base)
    error = response.json()["error"]
    assert error["code"] == "card_unreachable"
    assert error["message"] == (
        f"The server answered with an error instead of the agent card: {card_server.base}/.well-known/agent.json "
        f"(HTTP 503); before that: {card_server.base}/.well-known/agent-card.json (HTTP 404)."
    )
    # A card missing at both paths still says so.
    card_server.routes.clear()
    response, _ = _register(client_for, alice, card_server.base)
    assert response.json()["error"]["code"] == "card_not_found"
    assert response.json()["error"]["message"].startswith("No agent card found: ")


def _hang_up(handler: QuietHandler) -> None:
    handler.close_connection = True  # no response at all


def _redirect_to_itself(handler: QuietHandler) -> None:
    handler.send_response(302)
    handler.send_header("Location", handler.path)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


@pytest.mark.parametrize(
    ("route", "message", "outcome"),
    [
        # httpx's own messages end with a full stop; the card's message used to add a second one.
        (
            _hang_up,
            "Could not reach {url}: Server disconnected without sending a response.",
            "{url} (Server disconnected without sending a response)",
        ),
        (
            _redirect_to_itself,
            "Could not reach {url}: Exceeded maximum allowed redirects.",
            "{url} (Exceeded maximum allowed redirects)",
        ),
    ],
    ids=["hang-up", "redirect-loop"],
)
def test_a_card_server_that_gives_no_card_is_said_once_and_listed_in_tried(
    slow_server: SlowCardServer, alice: Any, client_for: Any, route: Any, message: str, outcome: str
) -> None:
    url = f"{slow_server.base}/loop.json"
    slow_server.routes["/loop.json"] = route
    response, _ = _register(client_for, alice, url)
    error = response.json()["error"]
    assert error["code"] == "card_unreachable"
    assert error["message"] == message.format(url=url)
    assert error["details"] == {"tried": [outcome.format(url=url)]}


def _redirect_to_metadata(handler: QuietHandler) -> None:
    handler.send_response(302)
    handler.send_header("Location", "http://169.254.169.254/latest/meta-data/")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def test_a_redirect_to_a_refused_address_names_the_url_that_redirected(
    slow_server: SlowCardServer, alice: Any, client_for: Any
) -> None:
    # The refusal named only 169.254.169.254: a caller who gave a public URL could not tell where that came from.
    url = f"{slow_server.base}/card.json"
    slow_server.routes["/card.json"] = _redirect_to_metadata
    response, _ = _register(client_for, alice, url)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "ssrf_blocked"
    assert error["message"].startswith(f"{url} redirected to an address Hermes refuses: Refusing to connect to ")
    assert error["details"]["host"] == "169.254.169.254"


def _redirect(location: str) -> Any:
    def handler(handler: QuietHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return handler


def _not_json(handler: QuietHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", "6")
    handler.end_headers()
    handler.wfile.write(b"<html>")


def test_a_redirect_on_the_same_host_to_a_refused_scheme_says_it_was_a_redirect(
    slow_server: SlowCardServer, alice: Any, client_for: Any
) -> None:
    # The caller gave an http:// URL and read "Only http and https URLs are allowed, not 'file'".
    url = f"{slow_server.base}/card.json"
    slow_server.routes["/card.json"] = _redirect("file:///etc/passwd")
    response, _ = _register(client_for, alice, url)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "ssrf_blocked"
    assert error["message"].startswith(f"{url} redirected to an address Hermes refuses: ")


def test_an_answer_that_is_not_json_names_the_url_it_came_from(
    slow_server: SlowCardServer, alice: Any, client_for: Any
) -> None:
    # It named the URL that redirected, not the one whose body was not JSON.
    url = f"{slow_server.base}/card.json"
    slow_server.routes["/card.json"] = _redirect("/elsewhere.json")
    slow_server.routes["/elsewhere.json"] = _not_json
    response, _ = _register(client_for, alice, url)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "card_invalid"
    assert error["message"].startswith(
        f"The agent card at {slow_server.base}/elsewhere.json (redirected from {url}) is not valid JSON"
    )


def test_a_refused_connection_lists_the_url_tried(alice: Any, client_for: Any, settings: Any, free_port: int) -> None:
    settings.HERMES_SSRF_ALLOWLIST = ["127.0.0.1"]
    response, _ = _register(client_for, alice, f"http://127.0.0.1:{free_port}/")
    error = response.json()["error"]
    assert error["code"] == "card_unreachable"
    # Refused at the first path: the fallback is not tried (the server is not there at all).
    [tried] = error["details"]["tried"]
    assert tried.startswith(f"http://127.0.0.1:{free_port}/.well-known/agent-card.json (")
    assert not error["message"].endswith("..")


def test_timeouts_list_every_url_tried(
    slow_server: SlowCardServer, alice: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket operation that times out, and the whole fetch running out of time, after a 404 at the first path."""
    first, fallback = f"{slow_server.base}/.well-known/agent-card.json", f"{slow_server.base}/.well-known/agent.json"
    slow_server.routes["/.well-known/agent.json"] = slow_server.trickle_body(b"{}" * 50, pieces=50, interval=0.1)
    response, _ = _register(client_for, alice, slow_server.base)  # a drip-feed: the deadline ends it
    assert response.json()["error"]["details"] == {"tried": [f"{first} (HTTP 404)", f"{fallback} (over the 1 s limit)"]}

    monkeypatch.setattr(cards, "CARD_TIMEOUT", httpx.Timeout(0.2))
    slow_server.routes["/.well-known/agent.json"] = slow_server.delayed(0.6, 200, b"{}")
    response, _ = _register(client_for, alice, slow_server.base)
    error = response.json()["error"]
    assert error["message"] == f"Timed out fetching the agent card from {fallback}."
    assert error["details"] == {"tried": [f"{first} (HTTP 404)", f"{fallback} (timed out)"]}
