"""Text one person chooses and other people read: the names of organizations, agents, API keys, contacts and
users.

A name may hold any printable character of any script, but no control character: a newline or tab (or the line
and paragraph separators U+2028, U+2029) breaks the one-line places a name is shown (lists, audit lines, log
fields), and the bidirectional embedding, override and isolate controls (U+202A to U+202E, U+2066 to U+2069) make
the text around them display in another order than it is stored — "Trojan Source" spoofing, e.g. a key named to
look like another. Left-to-right, right-to-left and Arabic letter marks (U+200E, U+200F, U+061C) stay allowed:
right-to-left names need them and they reorder nothing around them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, urlsplit

from django.core.exceptions import ValidationError

_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def display_name(value: str) -> None:
    """Refuse a name holding a control character, naming the first one found."""
    found = _REFUSED.search(value)
    if found is None:
        return
    char = found.group()
    what = unicodedata.name(char, "a control character")
    raise ValidationError(
        f"Names cannot contain control characters: this one has U+{ord(char):04X} ({what}) at position "
        f"{found.start() + 1}.",
        code="control_character",
    )


def without_refused(value: str) -> str:
    """`value` as `display_name` would accept it: each control character a space, each bidi control dropped."""
    return " ".join(_REFUSED.sub(" ", _BIDI.sub("", value)).split())


def clean_stored_names(app_label: str, model_name: str) -> Callable[[Any, Any], None]:
    """A data migration's RunPython function: the `name` of every row stored before `display_name` was enforced
    (the console and the API refused such names, the Django admin and older versions did not), made acceptable."""

    def run(apps: Any, schema_editor: Any) -> None:
        model = apps.get_model(app_label, model_name)
        empty = "" if model._meta.get_field("name").blank else "unnamed"
        # Filtered here, not by the database: PostgreSQL refuses a pattern holding NUL.
        for row in model._base_manager.only("pk", "name").iterator():
            if _REFUSED.search(row.name):
                model._base_manager.filter(pk=row.pk).update(name=without_refused(row.name) or empty)

    return run


def visible_email(value: str) -> None:
    """Refuse an email address holding an invisible or control character (a zero-width space or joiner, a soft
    hyphen, a bidi control): `demo@her\u200bmes.local` registered as a second account that every member list, audit
    line and select showed as `demo@hermes.local`."""
    found = next((char for char in value if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")), None)
    if found is None:
        return
    what = unicodedata.name(found, "a control character")
    raise ValidationError(
        f"Email addresses cannot contain invisible characters: this one has U+{ord(found):04X} ({what}) at "
        f"position {value.index(found) + 1}.",
        code="invisible_character",
    )


def service_url_parts(value: str, problem: str) -> SplitResult:
    """`value` split, when it is http(s)://host[:port][/path] with no whitespace; else ValidationError(problem).
    Unlike Django's URLValidator a host without a dot is one: services on one Docker or cluster network reach each
    other by service name (`http://summarizer:8080/`). Credentials (`user:pw@`) are the caller's to refuse, in its
    own words."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValidationError(problem, code="invalid") from None
    host_and_port = parts.netloc.rpartition("@")[2]
    host_ok = bool(parts.hostname) and all(c.isalnum() or c in "-._:[]" for c in host_and_port)
    if parts.scheme not in ("http", "https") or not host_ok or any(c.isspace() for c in value):
        raise ValidationError(problem, code="invalid")
    return parts
