from apps.core.permissions import MATRIX, SCOPES, Role, permissions_doc
from hermes_site.config import BASE_DIR


def test_docs_permissions_md_matches_the_matrix() -> None:
    assert (BASE_DIR / "docs" / "permissions.md").read_text() == permissions_doc(), "run `make docs`"


def test_the_matrix_reads_as_the_issue_says() -> None:
    assert MATRIX[Role.OWNER] >= MATRIX[Role.ADMIN] >= MATRIX[Role.DEVELOPER] >= MATRIX[Role.MEMBER]
    assert {"org:roles", "org:billing", "org:delete"} <= MATRIX[Role.OWNER] - MATRIX[Role.ADMIN]
    assert {"org:admin", "agents:write", "federation:write"} <= MATRIX[Role.ADMIN]
    assert "org:admin" not in MATRIX[Role.DEVELOPER] and "keys:own" in MATRIX[Role.DEVELOPER]
    assert MATRIX[Role.MEMBER] == {"agents:read", "tasks:read", "federation:read", "org:read", "tasks:write"}
    assert "keys:own" not in SCOPES


def test_a_key_never_acts_beyond_the_scopes_a_key_can_hold() -> None:
    # Defence in depth: a key row listing a session-only action (an admin edit once put org:delete there, and the
    # key then deleted an org) still may not perform it.
    from apps.core.permissions import Access

    forged = Access(org=None, role=Role.OWNER, scopes=frozenset({"org:read", "org:delete", "org:billing", "keys:own"}))
    assert forged.allows("org:read")
    assert not any(forged.allows(action) for action in ("org:delete", "org:billing", "keys:own"))
    assert Access(org=None, role=Role.OWNER).allows("org:delete")  # a session, limited only by the role
