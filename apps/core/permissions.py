"""The role-by-action matrix, defined once. API views and console views both ask `Access.allows(action)`.

Actions double as API-key scopes: a key carries a subset of actions, and a request through a key is allowed an
action only when the key has the scope AND the creating member's role (today) allows it, so a key can never
exceed its creator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    MEMBER = "member", "Member"


# Scopes that an API key may carry (one place; docs/permissions.md is generated from this module).
SCOPES: dict[str, str] = {
    "agents:read": "List and read agents",
    "agents:write": "Register, update and delete agents",
    "tasks:read": "List and read tasks and their events",
    "tasks:write": "Send, cancel and continue tasks",
    "federation:read": "Read peers, contacts, policies, messages and the dead-letter queue",
    "federation:write": "Send federated messages; manage peers, keys, contacts, policies and the DLQ",
    "org:read": "Read the organization, its members and usage",
    "org:admin": "Manage members, invitations and API keys",
    # A read of its own, apart from org:admin: a key that exports the audit trail (to a SIEM, say) must not be able
    # to mint keys or invite people, the very changes the trail is there to reveal.
    "org:audit": "Read the organization's audit log",
}

# Actions that only exist for people in the console/session API, never on a key.
MEMBER_ONLY_ACTIONS: dict[str, str] = {
    "org:roles": "Change member roles and manage owners",
    "org:billing": "Change plan, quotas and billing settings",
    "org:delete": "Delete the organization",
    # Not seeing or revoking them: anyone may, whatever their role now (apps.orgs.actions.key_read_action).
    "keys:own": "Create and rotate one's own API keys",
}

ACTIONS: dict[str, str] = {**SCOPES, **MEMBER_ONLY_ACTIONS}

_READ = {"agents:read", "tasks:read", "federation:read", "org:read"}
MATRIX: dict[str, frozenset[str]] = {
    Role.OWNER: frozenset(ACTIONS),
    Role.ADMIN: frozenset(ACTIONS) - {"org:roles", "org:billing", "org:delete"},
    Role.DEVELOPER: frozenset(_READ | {"agents:write", "tasks:write", "keys:own"}),
    Role.MEMBER: frozenset(_READ | {"tasks:write"}),
}


def role_allows(role: str, action: str) -> bool:
    if action not in ACTIONS:
        raise KeyError(f"unknown action {action!r}: add it to apps.core.permissions.ACTIONS")
    return action in MATRIX.get(role, frozenset())


def role_refusal(role: str, action: str) -> str:
    """Why a role may not do something, in words a console user follows (the action key stays in parentheses
    for API clients): "Your role (Member) may not manage members, invitations and API keys (org:admin); that
    takes an Owner or Admin."."""
    label = Role(role).label if role in Role.values else role
    roles = [r.label for r in Role if action in MATRIX[r]]
    allowed = " or ".join([", ".join(roles[:-1]), roles[-1]] if len(roles) > 1 else roles)
    meaning = ACTIONS[action]
    return f"Your role ({label}) may not {meaning[0].lower()}{meaning[1:]} ({action}); that takes an {allowed}."


@dataclass(frozen=True)
class Access:
    """Who is acting for which org: put on `request.auth` by the org-aware authentication classes."""

    org: Any
    role: str
    user: Any = None
    api_key: Any = None
    scopes: frozenset[str] | None = None  # None: a session, limited only by the role
    extra: dict[str, Any] = field(default_factory=dict)

    def allows(self, action: str) -> bool:
        if not role_allows(self.role, action):
            return False
        # A key's row is not trusted to hold only real scopes: session-only actions (org:roles, org:billing,
        # org:delete, keys:own) stay refused even if one got in (an admin edit once put org:delete there).
        return self.scopes is None or (action in self.scopes and action in SCOPES)


def staff_access(org: Any, user: Any) -> Access:
    """Staff acting on an org's rows (the Django admin), for actions that take an `Access`: with an owner's rights,
    as the admin is staff's console for every org, so what can still refuse them are the rules that hold whoever
    acts (an org keeps its last owner). The audit row names the staff member as the actor."""
    return Access(org=org, role=Role.OWNER, user=user)


def matrix_markdown() -> str:
    roles = list(Role)
    lines = ["| Action | Meaning | " + " | ".join(r.label for r in roles) + " | API-key scope |"]
    lines.append("| --- | --- | " + " | ".join("---" for _ in roles) + " | --- |")
    for action, meaning in ACTIONS.items():
        cells = " | ".join("yes" if role_allows(r, action) else "—" for r in roles)
        lines.append(f"| `{action}` | {meaning} | {cells} | {'yes' if action in SCOPES else 'no'} |")
    return "\n".join(lines) + "\n"


def permissions_doc() -> str:
    """docs/permissions.md (`make docs` writes it; a test checks the file matches)."""
    return (
        "# Roles and permissions\n\n"
        "Generated from `apps/core/permissions.py` by `make docs`; do not edit by hand.\n\n"
        "One matrix (role by action) guards the API (`OrgActionPermission` / `require_action`), the console "
        "(`org_action_required`) and the actions themselves. API-key scopes are the actions marked as scopes: a "
        "request through a key may perform an action only when the key carries the scope **and** its creator's "
        "current role allows it, so a key never exceeds the person who made it (and shrinks when they are "
        "demoted). Actions that are not scopes (roles, billing, deletion, one's own keys) need a signed-in "
        "session.\n\n" + matrix_markdown() + "\nFiner rules enforced by the actions:\n\n"
        "- An organization never loses its last owner (demoting or removing them is a 409 `last_owner`).\n"
        "- Admins remove developers and members but not owners, and cannot invite owners.\n"
        "- Anyone may leave an org (remove their own membership).\n"
        "- Developers manage only the API keys they created; another person's key is a 404 for them.\n"
        "- Everyone sees and may revoke the API keys they created, whatever their role now (a developer demoted to "
        "member keeps keys that work, narrowed to the member role); creating and rotating keys needs `keys:own`.\n"
        "- Renaming an org needs `org:admin`; changing its plan needs `org:billing`.\n"
        "- A missing scope is a 403 `missing_scope` naming the scope (a session-only action asked of a key: 403 "
        "`session_required`); a role that may not act is a 403 `role_forbidden`; an object of another org is a "
        "404, exactly like a missing one.\n"
    )


if __name__ == "__main__":
    print(permissions_doc(), end="")
