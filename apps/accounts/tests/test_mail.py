"""Mail goes out from a job (apps.core.mail.send_later → apps.core.tasks.send_email), so that the SMTP server's
state never shows in a request: a password reset answers alike for every address whether the server is up, down
or slow, and a broker outage is a warning, not a 500."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from kombu import Connection

from apps.core.tasks import MAIL_RETRIES, send_email
from hermes_site.celery import app as celery_app
from tests.tasks.conftest import celery_route

pytestmark = pytest.mark.django_db
RESET = "/api/v1/auth/password/reset"


@pytest.fixture
def dead_smtp(settings: Any, free_port: int) -> int:
    """Mail goes to an SMTP port nobody listens on (the reported EMAIL_URL=smtp://127.0.0.1:8642)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port
    return free_port


@pytest.fixture
def hanging_up_smtp(settings: Any) -> Iterator[list[int]]:
    """An SMTP port that accepts each connection and closes it at once; yields the count of connections."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            accepted[0] += 1
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.getsockname()[1]
    try:
        yield accepted
    finally:
        server.close()


def test_a_reset_answers_alike_for_every_address_when_the_mail_server_is_down(
    alice: Any, api: Any, client: Any, dead_smtp: int, django_capture_on_commit_callbacks: Any
) -> None:
    # The existing address was a 500 (the mail was sent on commit, in the request), the unknown one a 202.
    with celery_route() as queue:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert api.post(RESET, {"email": "alice@acme.test"}, format="json").status_code == 202
            assert api.post(RESET, {"email": "nobody@acme.test"}, format="json").status_code == 202
            page = client.post("/accounts/password-reset/", {"email": "alice@acme.test"})
            assert page.status_code == 302 and page["Location"] == "/accounts/password-reset/sent/"
        assert len(callbacks) == 2  # one job per reset of an existing account
        with Connection(celery_app.conf.broker_url) as conn, conn.SimpleQueue(queue) as jobs:
            for _ in callbacks:
                message = jobs.get(timeout=2)
                message.ack()
                assert message.headers["task"] == "apps.core.tasks.send_email"
                _subject, body, recipients = message.payload[0]
                assert recipients == ["alice@acme.test"] and "/accounts/password-reset/" in body
                # Celery logs a job's arguments: the reset link (a credential) and the address stay out of its logs.
                shown = message.headers["argsrepr"]
                assert "password-reset" not in shown and "alice" not in shown, shown


def test_a_reset_is_a_202_and_a_warning_when_the_broker_is_down(
    alice: Any, api: Any, free_port: int, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        celery_route(f"redis://127.0.0.1:{free_port}/0"),
        caplog.at_level(logging.WARNING, "apps.core.mail"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert api.post(RESET, {"email": "alice@acme.test"}, format="json").status_code == 202
    [line] = [r.getMessage() for r in caplog.records if r.name == "apps.core.mail"]
    assert line.startswith("email 'Reset your Hermes password' to 1 recipient(s) not sent: the job could not be queued")
    assert "alice" not in line


def test_the_job_sends_the_mail(eager_celery: None) -> None:
    send_email.apply(args=["Hello", "Body text", ["zoe@example.test"]]).get()
    [sent] = mail.outbox
    assert (sent.subject, sent.body, sent.to) == ("Hello", "Body text", ["zoe@example.test"])


def test_the_job_retries_while_the_mail_server_fails(hanging_up_smtp: list[int]) -> None:
    # Applied here, Celery runs the retries at once instead of after their backoff; a retry would raise (Retry)
    # out of apply() while eager jobs propagate their exceptions, as the settings have them do.
    previous = celery_app.conf.task_eager_propagates
    celery_app.conf.task_eager_propagates = False
    try:
        result = send_email.apply(args=["Hello", "Body text", ["zoe@example.test"]])
    finally:
        celery_app.conf.task_eager_propagates = previous
    assert result.failed() and isinstance(result.result, OSError)
    assert hanging_up_smtp[0] == MAIL_RETRIES + 1
