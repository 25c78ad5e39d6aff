"""Fetching and understanding A2A Agent Cards (v1.0, and v0.3 through the SDK's compatibility parser).

The SDK's `parse_agent_card` turns the JSON into its `AgentCard` (protobuf) model, mapping v0.3 fields
(`url`, `preferredTransport`, `protocolVersion`, …) onto v1.0's `supportedInterfaces`; `CardInfo` is what Hermes
keeps of it. Every fetch goes through the SSRF guard.

A card server is not trusted to be quick: the whole fetch — every URL tried, every redirect followed, from name
resolution to the last byte — has `CARD_DEADLINE` seconds. httpx's timeouts bound each socket operation, so a
server sending a byte every few seconds never tripped them and held the API worker for as long as it liked. The
fetch is async, so one cancel scope ends it wherever it waits; the federation transport, on synchronous httpx
that cannot be cancelled, has to cap every socket operation instead (apps/federation/transport.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
from a2a.client.card_resolver import parse_agent_card
from a2a.client.client_factory import ClientFactory
from a2a.types.a2a_pb2 import AgentCard
from a2a.utils.constants import TransportProtocol
from django.core.exceptions import ValidationError
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict, ParseError

from apps.agents.client import as_sentence
from apps.core import jsonutil
from apps.core.http import OutboundBlocked, check_url, guarded_async_client
from apps.core.validators import display_name

WELL_KNOWN_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")
MAX_CARD_BYTES = 512 * 1024
# Seconds for the whole fetch, all candidates together: POST /agents answers within about this long.
CARD_DEADLINE = 10.0
# Per socket operation, inside the deadline: a connect that hangs fails on its own, with its own message.
CARD_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# The server has no card there, so the next well-known path is worth trying; any other 4xx/5xx is its error.
NOT_FOUND_STATUSES = (404, 405, 410)


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


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


# JSON types a scalar field of the card takes, as the protobuf JSON mapping reads them (64-bit integers and floats
# may come as strings too): what each must be, and the Python types of its accepted values.
_NUMBER_TYPES = (int, float, str)
_SCALAR_TYPES: dict[int, tuple[str, tuple[type, ...]]] = {
    FieldDescriptor.CPPTYPE_STRING: ("a string", (str,)),
    FieldDescriptor.CPPTYPE_BOOL: ("a boolean", (bool,)),
    FieldDescriptor.CPPTYPE_ENUM: ("a string", (str, int)),
    **dict.fromkeys(
        (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT32),
        ("a whole number", (int, str)),
    ),
    FieldDescriptor.CPPTYPE_UINT64: ("a whole number", (int, str)),
    **dict.fromkeys((FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE), ("a number", _NUMBER_TYPES)),
}


def _value_problem(field_: Any, value: Any, path: str) -> tuple[str, str] | None:
    """(where, what is wrong) for one value of `field_` (one item of a repeated field), or None."""
    message = field_.message_type
    if message is not None:
        if message.full_name.startswith("google.protobuf."):
            return None  # Struct, Value, Timestamp…: any JSON their own mapping takes, left to the parser
        if not isinstance(value, dict):
            return path, f"`{path}` must be an object, not {_json_type(value)}"
        return _message_problem(value, message, f"{path}.")
    what, types = _SCALAR_TYPES.get(field_.cpp_type, ("", ()))
    # A JSON true is a Python bool, which is an int: it is no number (nor enum value) of the card.
    if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
        return path, f"`{path}` must be {what}, not {_json_type(value)}"
    return None


def _message_problem(raw: dict[str, Any], descriptor: Any, prefix: str = "") -> tuple[str, str] | None:
    for field_ in descriptor.fields:
        name = field_.json_name if field_.json_name in raw else field_.name
        value = raw.get(name)
        if value is None:
            continue
        path = f"{prefix}{field_.json_name}"
        message = field_.message_type
        if message is not None and message.GetOptions().map_entry:
            if not isinstance(value, dict):
                return path, f"`{path}` must be an object, not {_json_type(value)}"
            value_field = message.fields_by_name["value"]
            for key, item in value.items():
                if item is not None and (problem := _value_problem(value_field, item, f"{path}.{key}")):
                    return problem
        elif field_.is_repeated:
            if not isinstance(value, list):
                return path, f"`{path}` must be a list, not {_json_type(value)}"
            for index, item in enumerate(value):
                if (problem := _value_problem(field_, item, f"{path}[{index}]")) is not None:
                    return problem
        elif (problem := _value_problem(field_, value, path)) is not None:
            return problem
    return None


def _shape_error(raw: dict[str, Any]) -> CardError | None:
    """The first field, at any depth, whose JSON type the AgentCard schema cannot take (a list where it has a
    repeated field, an object where it has a message or a map, a number where it has text, text where it has a
    boolean), named by its path (`skills[0].name`). The SDK's parser answers these with its own internals ("'str'
    object has no attribute 'pop'", "expected string or bytes-like object, got 'int'") and no field; the schema
    itself is read from the SDK's model, so this stays in step with it."""
    problem = _message_problem(raw, AgentCard.DESCRIPTOR)
    if problem is None:
        return None
    path, text = problem
    return CardError(
        f"The agent card does not match the A2A AgentCard schema: {text}.", code="card_invalid", details={"field": path}
    )


def _too_long(card: AgentCard) -> CardError | None:
    """A name, description or version longer than Hermes keeps: refused, as when typed by hand, rather than cut
    without a word (every member of the org reads the name; the marketplace lists the description)."""
    from apps.agents.models import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH, VERSION_MAX_LENGTH

    for name, value, limit in (
        ("name", card.name.strip(), NAME_MAX_LENGTH),
        ("description", card.description, DESCRIPTION_MAX_LENGTH),
        ("version", card.version, VERSION_MAX_LENGTH),
    ):
        if len(value) > limit:
            return CardError(
                f"The agent card's {name} is {len(value)} characters long; Hermes keeps at most {limit}.",
                code="card_invalid",
                details={"field": name},
            )
    return None


def parse_card(raw: Any, *, card_url: str = "", check_interface: bool = True) -> CardInfo:
    """Validate a card (a JSON object) with the SDK's model and pick the JSON-RPC interface Hermes will call.

    `check_interface=False` skips the up-front SSRF check of the interface URL (Hermes' own demo agents, whose
    address the operator chose); every call is still checked when it connects."""
    if not isinstance(raw, dict):
        raise CardError("The agent card is not a JSON object.", code="card_invalid")
    if (shape := _shape_error(raw)) is not None:
        raise shape
    try:
        card = parse_agent_card(copy.deepcopy(raw))
    except (ParseError, ValueError, TypeError) as exc:
        # The parser's messages end with a period of their own, some with two.
        reason = str(exc).rstrip(". ")
        raise CardError(
            f"The agent card does not match the A2A AgentCard schema: {reason}.", code="card_invalid"
        ) from exc
    if not card.name.strip():
        raise CardError("The agent card has no name.", code="card_invalid", details={"field": "name"})
    if (length := _too_long(card)) is not None:
        raise length
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
        # The same details as refusing that address given directly (`ssrf_blocked`), so a client reads the rule
        # from one place; the code stays card_invalid: it is the card that is wrong, not the URL the caller gave.
        raise CardError(
            f"The card's interface URL is not usable: {exc}",
            code="card_invalid",
            details={"field": "supportedInterfaces", "rule": exc.rule, "host": exc.host, "address": exc.address},
        ) from exc
    capabilities = MessageToDict(card.capabilities)
    capabilities["streaming"] = card.capabilities.streaming
    capabilities["pushNotifications"] = card.capabilities.push_notifications
    return CardInfo(
        name=card.name.strip(),
        description=card.description,
        version=card.version,
        url=url,
        protocol_version=interface.protocol_version or "1.0",
        capabilities=capabilities,
        skills=[MessageToDict(skill) for skill in card.skills],
        raw=raw,
        card_url=card_url,
    )


def sdk_card(raw: dict[str, Any]) -> AgentCard:
    return parse_agent_card(copy.deepcopy(raw))


@dataclass(frozen=True)
class CallingTerms:
    """What a stored card asks of its callers beyond the interface URL: the chosen interface's `tenant` (the SDK's
    client sends it as every request's `params.tenant`) and, for error messages, the security schemes it requires."""

    tenant: str = ""
    required_credentials: tuple[str, ...] = ()


def calling_terms(raw: Any) -> CallingTerms:
    """The CallingTerms of a stored card (`Agent.card`); empty for an agent registered by hand or a card that no
    longer parses (it was checked when stored: the call itself will say what is wrong)."""
    if not isinstance(raw, dict) or not raw:
        return CallingTerms()
    try:
        card = sdk_card(raw)
    except (ParseError, ValueError, TypeError, AttributeError, KeyError):
        return CallingTerms()
    interface = _jsonrpc_interface(card)
    return CallingTerms(tenant=interface.tenant if interface is not None else "", required_credentials=_required(card))


def _required(card: AgentCard) -> tuple[str, ...]:
    """The card's required security schemes, each as a caller would recognise it ("X-API-Key (apiKey in
    header)"): those its `securityRequirements` name, or every declared scheme when it names none."""
    names = [name for requirement in card.security_requirements for name in requirement.schemes]
    names = list(dict.fromkeys(names or sorted(card.security_schemes)))
    return tuple(
        _scheme_label(name, card.security_schemes[name]) if name in card.security_schemes else name for name in names
    )


def _scheme_label(name: str, scheme: Any) -> str:
    kind = scheme.WhichOneof("scheme")
    if kind == "api_key_security_scheme":
        key = scheme.api_key_security_scheme
        return f"{key.name or name} (apiKey in {key.location or 'an unnamed location'})"
    if kind == "http_auth_security_scheme":
        return f"{name} (HTTP {scheme.http_auth_security_scheme.scheme or 'authentication'})"
    labels = {
        "oauth2_security_scheme": "OAuth 2.0",
        "open_id_connect_security_scheme": "OpenID Connect",
        "mtls_security_scheme": "mutual TLS",
    }
    return f"{name} ({labels[kind]})" if kind in labels else name


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
    """Fetch and parse the card at (or under) `url` within CARD_DEADLINE seconds. Raises CardError or
    OutboundBlocked."""
    candidates = card_candidates(url)
    deadline = CARD_DEADLINE  # read once: the message names the limit that was applied
    candidate = candidates[0]
    tried: list[str] = []  # "<url> (<what happened>)" of each candidate given up on, for `details.tried`
    requested: list[httpx.URL] = []  # every request sent, redirects included (the guard refuses in the transport)

    async def note(request: httpx.Request) -> None:
        requested.append(request.url)

    with anyio.move_on_after(deadline) as scope:
        async with guarded_async_client(
            timeout=CARD_TIMEOUT, follow_redirects=True, event_hooks={"request": [note]}
        ) as client:
            for candidate in candidates:
                requested.clear()
                try:
                    status, body, where = await _get_limited(client, candidate)
                except OutboundBlocked as exc:
                    if not requested or requested[-1] == httpx.URL(candidate):
                        raise
                    # Refused at a redirect's target: the message named only that address, and a caller who gave
                    # a public URL could not tell where it came from.
                    raise OutboundBlocked(
                        f"{candidate} redirected to an address Hermes refuses: {exc}",
                        rule=exc.rule,
                        host=exc.host,
                        address=exc.address,
                    ) from exc
                except httpx.TimeoutException as exc:
                    message = f"Timed out fetching the agent card from {candidate}."
                    raise _unreachable(message, tried, candidate, "timed out") from exc
                except httpx.HTTPError as exc:
                    reason = str(exc) or type(exc).__name__
                    message = as_sentence(f"Could not reach {candidate}: {reason}")
                    raise _unreachable(message, tried, candidate, reason.rstrip(".")) from exc
                if status in NOT_FOUND_STATUSES and candidate != candidates[-1]:
                    tried.append(f"{candidate} (HTTP {status})")
                    continue
                if status >= 400:
                    raise _status_error(where, status, tried)
                try:
                    raw = jsonutil.loads(body)
                except ValueError as exc:
                    message = f"The agent card at {where} is not valid JSON: {exc}"
                    raise CardError(message, code="card_invalid") from exc
                return parse_card(raw, card_url=candidate)
    if scope.cancelled_caught:
        message = f"Fetching the agent card from {candidate} took longer than {deadline:g} s."
        raise _unreachable(message, tried, candidate, f"over the {deadline:g} s limit")
    raise AssertionError("unreachable: the last candidate always returns or raises")  # pragma: no cover


def _unreachable(message: str, tried: list[str], candidate: str, outcome: str) -> CardError:
    """card_unreachable for the candidate being fetched, listing it after those tried before (docs/agents.md)."""
    return CardError(message, code="card_unreachable", details={"tried": [*tried, f"{candidate} ({outcome})"]})


def _status_error(candidate: str, status: int, tried: list[str]) -> CardError:
    """The last candidate's HTTP error. "No agent card found" only when the server says it has none: a 500 read
    as "not found" sent people looking for a missing file instead of at a broken server."""
    tried = [*tried, f"{candidate} (HTTP {status})"]
    if status in NOT_FOUND_STATUSES:
        return CardError(
            "No agent card found: " + "; ".join(tried) + ".", code="card_not_found", details={"tried": tried}
        )
    message = f"The server answered with an error instead of the agent card: {candidate} (HTTP {status})"
    if len(tried) > 1:
        message += "; before that: " + "; ".join(tried[:-1])
    return CardError(message + ".", code="card_unreachable", details={"tried": tried})


def _where(url: str, answered: httpx.URL) -> str:
    """`url`, and where it redirected to when the answer came from elsewhere (a message must name the URL whose
    answer it describes, and the one the caller gave)."""
    return url if str(answered) == url else f"{answered} (redirected from {url})"


async def _get_limited(client: httpx.AsyncClient, url: str) -> tuple[int, bytes, str]:
    """The status, body and `_where` of `url`'s answer."""
    async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
        where = _where(url, response.url)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_CARD_BYTES:
                raise CardError(
                    f"The agent card at {where} is larger than {MAX_CARD_BYTES // 1024} KiB.", code="card_invalid"
                )
            chunks.append(chunk)
        return response.status_code, b"".join(chunks), where
