from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.core.mail import get_connection, send_mail

from apps.core.idempotency import purge_expired

logger = logging.getLogger(__name__)

# An unreachable, slow or busy SMTP server is tried again within 30 s, then 1, 2, 4 and 8 min (a random wait up to
# each): a quarter of an hour at most in all, well within a reset link's and an invitation's lifetime.
MAIL_RETRIES = 5
MAIL_BACKOFF_SECONDS = 30
MAIL_BACKOFF_MAX_SECONDS = 600
# Without EMAIL_TIMEOUT, Django's SMTP connection waits for a stalled server forever, and so would a worker slot.
MAIL_TIMEOUT_SECONDS = 30


@shared_task(name="apps.core.tasks.purge_idempotency_records", ignore_result=True)
def purge_idempotency_records() -> int:
    """Scheduled by beat: idempotency records are only needed for their TTL (a day)."""
    deleted = purge_expired()
    if deleted:
        logger.info("purged %d expired idempotency records", deleted)
    return deleted


def mail_argsrepr(subject: str, body: str, recipients: list[str]) -> str:
    """`send_email`'s arguments as Celery logs them: the body holds reset and invitation links, which are
    credentials, and the addresses are personal data; neither belongs in a log line."""
    return f"({subject!r}, <body: {len(body)} characters>, <{len(recipients)} recipient(s)>)"


@shared_task(bind=True, name="apps.core.tasks.send_email", ignore_result=True, max_retries=MAIL_RETRIES)
def send_email(self: Task, subject: str, body: str, recipients: list[str]) -> None:
    """Send one email (DEFAULT_FROM_EMAIL); enqueued by `apps.core.mail.send_later`, not called directly."""
    connection = get_connection(timeout=settings.EMAIL_TIMEOUT or MAIL_TIMEOUT_SECONDS)
    try:
        send_mail(subject, body, None, recipients, connection=connection)
    except OSError as exc:  # smtplib.SMTPException is one, as are a refused connection and a timeout
        countdown = get_exponential_backoff_interval(
            MAIL_BACKOFF_SECONDS, self.request.retries, MAIL_BACKOFF_MAX_SECONDS, full_jitter=True
        )
        # A retry is a new message, which would carry (and log) the arguments in full without its own argsrepr.
        raise self.retry(exc=exc, countdown=countdown, argsrepr=mail_argsrepr(subject, body, recipients)) from exc
