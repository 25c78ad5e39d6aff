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
