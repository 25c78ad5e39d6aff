"""Fetching and understanding A2A Agent Cards (v1.0, and v0.3 through the SDK's compatibility parser).

The SDK's `parse_agent_card` turns the JSON into its `AgentCard` (protobuf) model, mapping v0.3 fields
(`url`, `preferredTransport`, `protocolVersion`, …) onto v1.0's `supportedInterfaces`; `CardInfo` is what Hermes
keeps of it. Every fetch goes through the SSRF guard.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from a2a.client.card_resolver import parse_agent_card
from a2a.client.client_factory import ClientFactory
from a2a.types.a2a_pb2 import AgentCard
from a2a.utils.constants import TransportProtocol
from django.core.exceptions import ValidationError
from google.protobuf.json_format import MessageToDict, ParseError

from apps.core import jsonutil
from apps.core.http import OutboundBlocked, check_url, guarded_async_client
from apps.core.validators import display_name

WELL_KNOWN_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")
MAX_CARD_BYTES = 512 * 1024
CARD_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class CardError(Exception):
    """A card that cannot be fetched or is not a usable A2A card. `code` is stable for API errors."""

    def __init__(self, message: str, *, code: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or {}


@dataclass(frozen=True)
class CardInfo:
    name: str
    description: str
    version: str
    url: str
    protocol_version: str
    capabilities: dict[str, Any]
    skills: list[dict[str, Any]]
    raw: dict[str, Any]
    card_url: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def streaming(self) -> bool:
        return bool(self.capabilities.get("streaming"))


def url_has_credentials(url: str) -> bool:
    """A URL with user:password@ — never stored for an agent: it is shown to the org and logged with every call."""
    return "@" in urlsplit(url).netloc


def parse_card(raw: Any, *, card_url: str = "", check_interface: bool = True) -> CardInfo:
    """Validate a card (a JSON object) with the SDK's model and pick the JSON-RPC interface Hermes will call.

    `check_interface=False` skips the up-front SSRF check of the interface URL (Hermes' own demo agents, whose
    address the operator chose); every call is still checked when it connects."""
    if not isinstance(raw, dict):
        raise CardError("The agent card is not a JSON object.", code="card_invalid")
    try:
        card = parse_agent_card(copy.deepcopy(raw))
    except (ParseError, ValueError, TypeError) as exc:
        raise CardError(f"The agent card does not match the A2A AgentCard schema: {exc}", code="card_invalid") from exc
    if not card.name.strip():
        raise CardError("The agent card has no name.", code="card_invalid", details={"field": "name"})
    try:
        display_name(card.name.strip())  # the name every member of the org will read, as one typed by hand
    except ValidationError as exc:
        raise CardError(
            f"The agent card's name is not usable: {exc.messages[0]}", code="card_invalid", details={"field": "name"}
        ) from exc
    interface = _jsonrpc_interface(card)
    if interface is None:
        bindings = sorted({i.protocol_binding for i in card.supported_interfaces}) or ["none"]
        raise CardError(
            "The agent card offers no JSON-RPC interface (Hermes speaks A2A over JSON-RPC); it offers: "
            + ", ".join(bindings)
            + ".",
            code="card_invalid",
            details={"field": "supportedInterfaces"},
        )
    url = urljoin(card_url, interface.url) if card_url else interface.url
    if url_has_credentials(url):
        raise CardError(
            "The card's interface URL carries credentials (user:password@): the URL is stored, shown and logged in "
            "plain text. An A2A agent declares how callers authenticate in its card instead.",
            code="card_invalid",
            details={"field": "supportedInterfaces", "rule": "credentials"},
        )
    try:
        if check_interface:
            check_url(url)
    except OutboundBlocked as exc:
        raise CardError(f"The card's interface URL is not usable: {exc}", code="card_invalid") from exc
    capabilities = MessageToDict(card.capabilities)
    capabilities["streaming"] = card.capabilities.streaming
    capabilities["pushNotifications"] = card.capabilities.push_notifications
    return CardInfo(
        name=card.name.strip()[:200],
        description=card.description,
        version=card.version[:50],
        url=url,
        protocol_version=interface.protocol_version or "1.0",
        capabilities=capabilities,
        skills=[MessageToDict(skill) for skill in card.skills],
        raw=raw,
        card_url=card_url,
    )


def sdk_card(raw: dict[str, Any]) -> AgentCard:
    return parse_agent_card(copy.deepcopy(raw))


def _jsonrpc_interface(card: AgentCard) -> Any:
    """The JSON-RPC interface, chosen the way the SDK's client factory chooses (1.0 before newer, then 0.3)."""
    return ClientFactory._find_best_interface(
        list(card.supported_interfaces), protocol_bindings=[TransportProtocol.JSONRPC]
    )


def card_candidates(url: str) -> list[str]:
    """A URL naming a .json file is the card itself; otherwise try both well-known paths under it."""
    parsed = check_url(url)
    if parsed.path.endswith(".json"):
        return [str(parsed)]
    base = str(parsed.copy_with(query=None, fragment=None)).rstrip("/")
    return [base + path for path in WELL_KNOWN_PATHS]


async def fetch_card(url: str) -> CardInfo:
    """Fetch and parse the card at (or under) `url`. Raises CardError or OutboundBlocked."""
    candidates = card_candidates(url)
    tried: list[str] = []
    async with guarded_async_client(timeout=CARD_TIMEOUT, follow_redirects=True) as client:
        for candidate in candidates:
            try:
                status, body = await _get_limited(client, candidate)
            except httpx.TimeoutException as exc:
                message = f"Timed out fetching the agent card from {candidate}."
                raise CardError(message, code="card_unreachable") from exc
            except httpx.HTTPError as exc:
                raise CardError(
                    f"Could not reach {candidate}: {exc or type(exc).__name__}.", code="card_unreachable"
                ) from exc
            if status in (404, 405, 410) and candidate != candidates[-1]:
                tried.append(f"{candidate} (HTTP {status})")
                continue
            if status >= 400:
                tried.append(f"{candidate} (HTTP {status})")
                raise CardError(
                    "No agent card found: " + "; ".join(tried) + ".",
                    code="card_not_found" if status in (404, 405, 410) else "card_unreachable",
                    details={"tried": tried},
                )
            try:
                raw = jsonutil.loads(body)
            except ValueError as exc:
                raise CardError(f"The agent card at {candidate} is not valid JSON: {exc}", code="card_invalid") from exc
            return parse_card(raw, card_url=candidate)
    raise AssertionError("unreachable: the last candidate always returns or raises")  # pragma: no cover


async def _get_limited(client: httpx.AsyncClient, url: str) -> tuple[int, bytes]:
    async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_CARD_BYTES:
                raise CardError(
                    f"The agent card at {url} is larger than {MAX_CARD_BYTES // 1024} KiB.", code="card_invalid"
                )
            chunks.append(chunk)
        return response.status_code, b"".join(chunks)
