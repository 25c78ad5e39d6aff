"""Outgoing email, sent by a Celery job (`apps.core.tasks.send_email`), never inside the request that asks for it.

Sent in the request, an unreachable SMTP server turned a password reset for an existing address into a 500 (an
unknown address got its 202), and a slow one made it seconds slower: both told who has an account. An invitation
answered 500 after it was stored. Now a request only enqueues the job, once its transaction has committed (no
mail for a change that was rolled back); the job retries with backoff while the server is down or slow.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.mail.backends import console
from django.db import transaction

from apps.core.tasks import mail_argsrepr, send_email

logger = logging.getLogger(__name__)


def send_later(subject: str, body: str, recipients: list[str]) -> None:
    """Send this email from a job once the current transaction commits (at once outside a transaction).

    A broker outage is logged, not raised: the request has done its work and must answer as it would otherwise
    (a password reset must not tell an existing address by a 500); the mail is not sent, and the person can ask
    again — as `apps.tasks.tasks.dispatch` logs a run message it could not send."""
    transaction.on_commit(lambda: _enqueue(subject, body, recipients))


def _enqueue(subject: str, body: str, recipients: list[str]) -> None:
    try:
        send_email.apply_async(args=[subject, body, recipients], argsrepr=mail_argsrepr(subject, body, recipients))
    except Exception as exc:
        logger.warning(
            "email %r to %d recipient(s) not sent: the job could not be queued (%s)", subject, len(recipients), exc
        )


class ConsoleEmailBackend(console.EmailBackend):
    """`consolemail://` (the dev default): each mail written as is to the process's own standard output.

    Django's console backend writes to `sys.stdout`, which a Celery worker replaces with a proxy into its log
    (`celery.redirected`): the log's RedactFilter then masked the password-reset link, so the printed link no
    longer worked — while a developer reads exactly these links there to sign in. Mail printed here is meant to be
    read in full; log lines stay redacted.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # `sys.__stdout__` is None only in a process started without one (pythonw): then whatever stdout is.
        kwargs.setdefault("stream", sys.__stdout__ or sys.stdout)
        super().__init__(*args, **kwargs)
