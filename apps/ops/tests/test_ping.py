"""`POST /api/v1/ops/ping` is exempt from CSRF (machine-to-machine): a page of another site, open in a browser on an
allowed address, must not be able to make a worker GET a URL through it."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings
from kombu import Connection

from hermes_site.celery import app as celery_app
from tests.tasks.conftest import celery_route

pytestmark = pytest.mark.django_db
PING = "/api/v1/ops/ping"
TARGET = '{"url": "http://127.0.0.1:6379/"}'


@override_settings(METRICS_ALLOWED_IPS=["127.0.0.1/32"], METRICS_TOKEN="")
def test_a_page_of_another_site_cannot_drive_the_ping_from_a_loopback_browser(client: Client) -> None:
    # The reported request: a cross-site "simple" POST (text/plain: no preflight) from a browser on loopback.
    simple = client.post(PING, TARGET, content_type="text/plain", HTTP_ORIGIN="http://evil.test")
    assert simple.status_code == 403 and simple.json()["error"]["code"] == "forbidden"
    assert "Cross-site requests are refused" in simple.json()["error"]["message"]
    for headers in (
        {"HTTP_ORIGIN": "http://evil.test"},
        {"HTTP_ORIGIN": "null"},  # a sandboxed frame
        {"HTTP_ORIGIN": "http://testserver:8080"},  # another service on this host
        {"HTTP_SEC_FETCH_SITE": "cross-site"},
    ):
        response = client.post(PING, TARGET, content_type="application/json", **headers)
        assert response.status_code == 403, headers


@override_settings(METRICS_ALLOWED_IPS=["127.0.0.1/32"], METRICS_TOKEN="")
def test_a_body_that_is_not_json_is_a_415(client: Client) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = client.post(PING, TARGET, content_type=content_type)
        assert response.status_code == 415, content_type
        error = response.json()["error"]
        assert error["code"] == "unsupported_media_type" and content_type in error["message"]


@override_settings(METRICS_ALLOWED_IPS=["127.0.0.1/32"], METRICS_TOKEN="")
def test_scripts_and_the_sites_own_pages_still_ping(client: Client) -> None:
    same_origin: dict[str, Any] = {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "same-origin"}
    with celery_route() as queue:  # a private queue, emptied here: no worker runs these jobs
        for headers in ({}, same_origin):
            response = client.post(PING, TARGET, content_type="application/json; charset=utf-8", **headers)
            assert response.status_code == 202, (headers, response.content)
        with Connection(celery_app.conf.broker_url) as conn:
            assert conn.default_channel.queue_purge(queue) == 2
