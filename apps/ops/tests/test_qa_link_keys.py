"""Operator QA round (ops), item 3: a changed SECRET_KEY made every stored link key unreadable, silently."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from apps.core import crypto
from apps.federation import actions
from apps.federation.models import Peer
from apps.ops.health import probe_link_keys
from hermes_site.config import BASE_DIR

NEW_SECRET_KEY = "rotated-" + "0123456789abcdefghij" * 3


@pytest.fixture
def berlin(db: None) -> Peer:
    peer = actions.create_peer(name="berlin", base_url="http://127.0.0.1:9", local_name="paris")
    actions.add_key(peer, secret=b"k1" * 16)  # k1, current
    actions.add_key(peer, secret=b"k2" * 16)  # k2, next
    return peer


def test_link_keys_that_decrypt_are_ok(berlin: Peer) -> None:
    probe = probe_link_keys()
    assert probe.ok and probe.detail == "2 live, all decrypt with the field key"


def test_a_changed_secret_key_is_named_with_the_keys_it_broke_and_the_fix(berlin: Peer) -> None:
    with override_settings(SECRET_KEY=NEW_SECRET_KEY):
        probe = probe_link_keys()
    assert not probe.ok and probe.available
    assert probe.detail.startswith(
        "2 of 2 live link keys cannot be decrypted (berlin k1, berlin k2): HERMES_FIELD_KEY, or SECRET_KEY while "
        "HERMES_FIELD_KEY is unset, changed since they were stored; every message to or from berlin fails"
    )
    assert "python -m apps.core.crypto" in probe.fix and "federation_keys add, promote, retire" in probe.fix
    assert probe.extra["undecryptable_link_keys"] == 2 and probe.extra["undecryptable_peers"] == ["berlin"]


def test_a_retired_key_is_not_counted(berlin: Peer) -> None:
    """A retired key never signs or verifies again: its ciphertext is never read, so it breaks nothing."""
    actions.promote_key(berlin)
    actions.retire_key(berlin)  # k1
    with override_settings(SECRET_KEY=NEW_SECRET_KEY):
        probe = probe_link_keys()
    assert probe.detail.startswith("1 of 1 live link keys cannot be decrypted (berlin k2)")


def test_doctor_and_health_say_so_and_doctor_exits_1(berlin: Peer) -> None:
    doctor, health = io.StringIO(), io.StringIO()
    with override_settings(SECRET_KEY=NEW_SECRET_KEY):
        with pytest.raises(CommandError) as refused:
            call_command("doctor", stdout=doctor)
        call_command("health", stdout=health)  # ready: federation is no readiness check
    assert str(refused.value) == "ready, but down (not readiness checks): link_keys"
    assert "  link_keys        DOWN 2 of 2 live link keys cannot be decrypted" in doctor.getvalue()
    assert "  warning          link_keys is down: 2 of 2" in doctor.getvalue()
    assert "  link_keys        DOWN 2 of 2 live link keys cannot be decrypted" in health.getvalue()


def test_doctor_is_quiet_about_link_keys_that_decrypt(berlin: Peer) -> None:
    out = io.StringIO()
    call_command("doctor", stdout=out)
    assert "  link_keys        ok   2 live, all decrypt with the field key" in out.getvalue()


def test_the_previous_secret_keys_field_key_in_hermes_field_key_reads_them_again(berlin: Peer) -> None:
    """The documented way to change SECRET_KEY: first pin the field key it stands for in HERMES_FIELD_KEY."""
    pinned = crypto.field_key_of(settings.SECRET_KEY)
    env = {**os.environ, "SECRET_KEY": settings.SECRET_KEY}
    printed = subprocess.run(
        [sys.executable, "-m", "apps.core.crypto"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert printed.returncode == 0 and printed.stdout == f"{pinned}\n", printed.stderr
    with override_settings(SECRET_KEY=NEW_SECRET_KEY, HERMES_FIELD_KEY=pinned):
        assert probe_link_keys().ok
        assert {key.secret() for key in berlin.keys.all()} == {b"k1" * 16, b"k2" * 16}
        actions.add_key(Peer.objects.create(name="rome", base_url="http://127.0.0.1:9", local_name="paris"))
    # A field key added later, first, encrypts from then on; the pinned one still reads what it stored.
    with override_settings(SECRET_KEY=NEW_SECRET_KEY, HERMES_FIELD_KEY=f"{crypto.field_key_of('newer')},{pinned}"):
        assert probe_link_keys().detail == "3 live, all decrypt with the field key"


def test_the_worker_warns_at_start(berlin: Peer, caplog: pytest.LogCaptureFixture) -> None:
    from hermes_site.celery import _warn_of_undecryptable_link_keys

    with override_settings(SECRET_KEY=NEW_SECRET_KEY), caplog.at_level(logging.WARNING, "hermes.startup"):
        _warn_of_undecryptable_link_keys()
    (record,) = [r for r in caplog.records if r.name == "hermes.startup"]
    assert record.getMessage().startswith("warning link_keys is down: 2 of 2 live link keys cannot be decrypted")
    assert "— fix: bring back the key they were stored with" in record.getMessage()
