"""Dev mail (`consolemail://`) and log redaction: the links a developer reads in the worker's output work, and no
log line carries them.

A Celery worker replaces `sys.stdout` with a proxy into its log (`celery.redirected`), whose RedactFilter masked
the reset link Django's console backend printed there (unusable), while a full invitation URL slipped past the
filter (its token in every log line that quoted the link)."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery.utils.log import LoggingProxy

from apps.core.logging import RedactFilter, redact
from apps.core.tasks import send_email

INVITE_TOKEN = "f6fPUnqsYCFMpBECFiGsWMjIvOu3wlAqnMpgv3GUKo0"
RESET_TOKEN = "cz1a2b-0123456789abcdef0123"
INVITE_LINK = f"http://127.0.0.1:18100/invitations/{INVITE_TOKEN}/"
RESET_LINK = f"http://127.0.0.1:18100/accounts/password-reset/NQ/{RESET_TOKEN}/"


@pytest.mark.parametrize(
    "line",
    [
        f"Accept within 7 days: {INVITE_LINK}",
        f"https://hermes.example.com/invitations/{INVITE_TOKEN}/",
        # HERMES_PUBLIC_URL may carry a path prefix.
        f"https://example.com/hermes/invitations/{INVITE_TOKEN}",
        f"GET /invitations/{INVITE_TOKEN}/ 404",
        f"GET /accounts/login/?next=https%3A%2F%2Fhermes.example.com%2Finvitations%2F{INVITE_TOKEN}%2F",
        f"Choose a new one within 60 minutes: {RESET_LINK}",
    ],
)
def test_a_link_token_is_masked_in_a_full_url_too(line: str) -> None:
    masked = redact(line)
    assert INVITE_TOKEN not in masked and RESET_TOKEN not in masked
    assert "[redacted]" in masked


@pytest.mark.parametrize(
    "line",
    [
        # The API's accept endpoint, and invitations named by id (the API, the console's revoke): no secret.
        "POST /api/v1/invitations/accept 200",
        "https://hermes.example.com/api/v1/invitations/accept",
        "GET /api/v1/invitations/12 404",
        "https://hermes.example.com/api/v1/invitations/12?format=json",
        "POST /org/invitations/12/revoke/ 302",
        "https://hermes.example.com/org/invitations/12/revoke/",
        "GET /api/v1/invitations/?state=open 200",
        "POST /org/invitations/ 422",
        "GET /accounts/password-reset/NQ/set-password/ 200",
    ],
)
def test_invitation_paths_without_a_token_stay_as_they_are(line: str) -> None:
    assert redact(line) == line


@contextmanager
def worker_stdout() -> Iterator[io.StringIO]:
    """`sys.stdout` as a Celery worker has it: a LoggingProxy into a log handler with RedactFilter. Yields what
    that log received. (Set in the test's body: pytest puts its own capture back on sys.stdout after setup.)"""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("hermes.test.celery.redirected")
    logger.addHandler(handler)
    logger.propagate = False
    saved = sys.stdout
    sys.stdout = LoggingProxy(logger, loglevel=logging.WARNING)  # type: ignore[assignment]
    try:
        yield written
    finally:
        sys.stdout = saved
        logger.removeHandler(handler)


def test_console_mail_reaches_the_real_stdout_whole_past_a_redacting_stdout(
    settings: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    settings.EMAIL_BACKEND = "apps.core.mail.ConsoleEmailBackend"
    body = f"Accept within 7 days: {INVITE_LINK}\nChoose a new one within 60 minutes: {RESET_LINK}\n"
    with worker_stdout() as log:
        send_email("Hermes links", body, ["dev@example.test"])  # the job, run in this process
    printed = capfd.readouterr().out
    assert INVITE_LINK in printed and RESET_LINK in printed  # usable links, as docs/deploy.md promises
    assert "[redacted]" not in printed
    # Nothing went through the log: neither masked copies nor the tokens.
    assert log.getvalue() == ""


def test_djangos_console_backend_would_print_into_the_redacting_log(
    settings: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    # Why ConsoleEmailBackend exists: the stock backend writes to whatever sys.stdout is, here the worker's log.
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    with worker_stdout() as log:
        send_email("Hermes links", f"Choose a new one within 60 minutes: {RESET_LINK}\n", ["dev@example.test"])
    assert RESET_LINK not in capfd.readouterr().out
    assert "/accounts/password-reset/NQ/[redacted]/" in log.getvalue()
