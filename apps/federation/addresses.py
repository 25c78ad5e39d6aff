"""Federation addresses (docs/federation.md).

    acme                  the org `acme` on this instance
    echo.acme             agent `echo` of org `acme` on this instance
    globex@berlin         org `globex` on the peer we call `berlin`
    summarizer.globex@berlin

Slugs never contain `.` or `@`, so the format is unambiguous. On the wire only the part local to the receiver
travels (`{"org", "agent"}`); the receiver qualifies the sender with its own name for the sending link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_SLUG = r"[a-z0-9](?:[a-z0-9_-]{0,78}[a-z0-9])?"
_ADDRESS = re.compile(rf"^(?:(?P<agent>{_SLUG})\.)?(?P<org>{_SLUG})(?:@(?P<peer>{_SLUG}))?$")
_PATTERN = re.compile(rf"^(?:\*|\*@(?P<peer>{_SLUG}))$")


class InvalidAddress(ValueError):
    pass


def is_slug(value: str) -> bool:
    """Whether `value` can be one part of an address (an org, agent or peer name)."""
    return bool(re.fullmatch(_SLUG, value))


@dataclass(frozen=True)
class Address:
    org: str
    agent: str | None = None
    peer: str | None = None  # None: this instance

    @classmethod
    def parse(cls, text: str) -> Address:
        match = _ADDRESS.match(text.strip().lower())
        if not match:
            raise InvalidAddress(
                f"{text!r} is not a federation address: use org, agent.org, org@peer or agent.org@peer "
                "(lower-case slugs)."
            )
        return cls(org=match["org"], agent=match["agent"], peer=match["peer"])

    @classmethod
    def from_wire(cls, data: Any, peer: str | None) -> Address:
        agent = data.get("agent") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("org"), str) or not isinstance(agent, str | None):
            # A number for the agent read as a slug ("123.acme") and was stored so.
            raise InvalidAddress("an address on the wire is an object with 'org' and optional 'agent' (strings)")
        agent = agent or None
        text = f"{agent}.{data['org']}" if agent else data["org"]
        parsed = cls.parse(text)
        return cls(org=parsed.org, agent=parsed.agent, peer=peer)

    def wire(self) -> dict[str, str | None]:
        return {"org": self.org, "agent": self.agent}

    @property
    def is_local(self) -> bool:
        return self.peer is None

    def org_address(self) -> Address:
        return Address(org=self.org, peer=self.peer)

    def __str__(self) -> str:
        text = f"{self.agent}.{self.org}" if self.agent else self.org
        return f"{text}@{self.peer}" if self.peer else text


def validate_pattern(text: str) -> str:
    """A policy's remote side: an address, `*@peer` or `*`. Returns the canonical form."""
    value = text.strip().lower()
    if _PATTERN.match(value):
        return value
    return str(Address.parse(value))


def pattern_specificity(pattern: str, remote: Address) -> int | None:
    """How specifically `pattern` names `remote` (higher wins), or None when it does not match."""
    if pattern == "*":
        return 0
    wildcard = _PATTERN.match(pattern)
    if wildcard:
        return 1 if wildcard["peer"] == remote.peer else None
    target = Address.parse(pattern)
    if target.peer != remote.peer or target.org != remote.org:
        return None
    if target.agent is None:
        return 2
    return 3 if target.agent == remote.agent else None
