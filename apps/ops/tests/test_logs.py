from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client, override_settings
from rest_framework import mixins
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate

from apps.core import context
from apps.core.api import OrgScopedViewSet
from apps.core.logging import (
    NOISY_LOGGERS,
    ContextFilter,
    JsonFormatter,
    RedactFilter,
    SampleFilter,
    adopt_server_loggers,
)
from apps.core.permissions import Access, Role
from apps.ops.tasks import ping_url
from apps.ops.tests.conftest import WorkerProcess, wait_for
from apps.orgs.models import Membership

REQUIRED = {"timestamp", "level", "logger", "message", "request_id", "org_id", "user_id", "task_id", "trace_id"}


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """What the production handler writes: its configured filters (settings.LOGGING) and JsonFormatter on the
    root logger."""
    from django.conf import settings

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    factories = {"apps.core.logging.ContextFilter": ContextFilter, "apps.core.logging.RedactFilter": RedactFilter}
    for name in settings.LOGGING["handlers"]["default"]["filters"]:
        handler.addFilter(factories[settings.LOGGING["filters"][name]["()"]]())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


@pytest.fixture
def http_target() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ping"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_request_line_is_one_json_object_with_every_field(
    client: Client, json_lines: Callable[[], list[dict[str, Any]]], django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user(email="logs@hermes.test", password="x")
    client.force_login(user)
    response = client.get("/api/v1/ops/ping/none", HTTP_X_REQUEST_ID="req-json-1")
    assert response["X-Request-ID"] == "req-json-1"
    line = next(r for r in json_lines() if r["logger"] == "hermes.request")
    assert set(line) >= REQUIRED
    assert line["request_id"] == "req-json-1" and line["user_id"] == user.pk
    assert line["message"] == "GET /api/v1/ops/ping/none 404"
    assert line["status"] == 404 and line["method"] == "GET" and line["duration_ms"] >= 0
    assert line["level"] == "INFO" and line["timestamp"].endswith("+00:00")


@pytest.mark.django_db
def test_link_tokens_never_reach_the_log(client: Client, json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    client.get("/invitations/Secret-Invite_Token123/")
    client.get("/password-reset/MQ/cz1a2b-0123456789abcdef/")
    logging.getLogger("hermes.test").info("GET /accounts/login/?next=%2Finvitations%2FSecret-Invite_Token123%2F")
    lines = [r for r in json_lines() if r["logger"] == "hermes.request"]
    assert [r["path"] for r in lines] == ["/invitations/[redacted]/", "/password-reset/MQ/[redacted]/"]
    assert lines[0]["message"] == "GET /invitations/[redacted]/ 404"  # an unknown token: still masked
    assert not any("Secret-Invite" in str(r) or "0123456789abcdef" in str(r) for r in json_lines())


def test_uvicorns_lines_are_json_and_mask_api_keys(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    # uvicorn logs every handshake on uvicorn.error, path and query string included, through handlers of its own.
    logger = logging.getLogger("uvicorn.error")
    own = logging.StreamHandler(io.StringIO())
    # (An earlier test's dictConfig may have disabled the logger, or its parent's propagation: set as uvicorn does.)
    parent = logging.getLogger("uvicorn")
    saved = (logger.handlers[:], logger.propagate, logger.level, logger.disabled, parent.propagate, parent.disabled)
    logger.handlers, logger.propagate, logger.disabled = [own], False, False
    logger.setLevel(logging.INFO)  # (not `.level =`: setLevel also drops the cached isEnabledFor answers)
    parent.disabled = False
    key = "hrm_M31j4wCf78ST3p5re_taNG5mA7TyxXhyHkXMRZX3IQE"
    try:
        adopt_server_loggers()
        logger.info(
            '%s - "WebSocket %s" [accepted]',
            "127.0.0.1:4711",
            f"/ws/tasks/t1/?api_key={key}&after=3",
            extra={"color_message": '%s - "\x1b[1mWebSocket %s\x1b[0m" [accepted]'},
        )
    finally:
        logger.handlers, logger.propagate, level, logger.disabled, parent.propagate, parent.disabled = saved
        logger.setLevel(level)
    line = next(r for r in json_lines() if r["logger"] == "uvicorn.error")
    assert "color_message" not in line  # uvicorn's ANSI copy of the template is no field of ours
    assert line["message"] == '127.0.0.1:4711 - "WebSocket /ws/tasks/t1/?api_key=hrm_M31j…3IQE&after=3" [accepted]'
    assert own.stream.getvalue() == ""  # not also written plain by uvicorn's handler


@pytest.mark.django_db
def test_api_authentication_binds_org_and_user(
    org: Any, alice: Any, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    class Memberships(mixins.ListModelMixin, OrgScopedViewSet):
        model = Membership
        read_action = "org:read"

        def list(self, request: Any) -> Response:
            logging.getLogger("hermes.test").info("listing members")
            return Response({"count": self.get_queryset().count()})

    request = APIRequestFactory().get("/members")
    force_authenticate(request, user=alice, token=Access(org=org, role=Role.OWNER, user=alice))
    context.clear()
    response = Memberships.as_view({"get": "list"})(request)
    assert response.status_code == 200
    line = next(r for r in json_lines() if r["message"] == "listing members")
    assert line["org_id"] == org.pk and line["user_id"] == alice.pk


def test_exceptions_and_extras_are_serialized(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    with context.bound(request_id="r-exc", task_id="t-1"):
        try:
            raise ValueError("bad thing")
        except ValueError:
            logging.getLogger("hermes.test").exception("it failed", extra={"agent": "echo"})
    line = json_lines()[-1]
    assert line["level"] == "ERROR" and "ValueError: bad thing" in line["exc_info"]
    assert line["agent"] == "echo" and line["task_id"] == "t-1" and line["trace_id"] is None


def test_eager_job_binds_job_id_and_restores_the_caller_context(
    json_lines: Callable[[], list[dict[str, Any]]], http_target: str
) -> None:
    context.clear()
    with context.bound(request_id="r-eager", org_id=7):
        ping_url.apply(args=["p-eager", http_target])
        assert context.get_context() == {"request_id": "r-eager", "org_id": 7}
    line = next(r for r in json_lines() if r["logger"] == "apps.ops.tasks")
    assert line["request_id"] == "r-eager" and line["org_id"] == 7 and line["job_id"]
    assert line["probe"]["http_status"] == 204


def _with_credentials(url: str) -> str:
    return url.replace("http://", "http://admin:PINGPASS@", 1) + "?token=PINGTOK&after=1"


def test_a_probed_urls_credentials_reach_no_line(
    json_lines: Callable[[], list[dict[str, Any]]], http_target: str
) -> None:
    """The message was masked, but the job's `probe.url` extra and Celery's `data.args` carried the userinfo
    password and `?token=` in clear (docs/observability.md: no line carries a bearer secret a URL can hold)."""
    url = _with_credentials(http_target)
    result = ping_url.apply(args=["p-secret", url]).get()
    assert result["url"] == url and result["http_status"] == 204  # the job's own result is the operator's URL
    lines = json_lines()
    assert lines and not [line for line in lines if "PINGPASS" in json.dumps(line) or "PINGTOK" in json.dumps(line)]
    line = next(r for r in lines if r["logger"] == "apps.ops.tasks")
    shown = http_target.replace("http://", "http://admin:[redacted]@", 1) + "?token=[redacted]&after=1"
    assert line["message"] == f"ping {shown} -> 204" and line["probe"]["url"] == shown


def test_every_string_of_a_records_extras_is_masked(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    secret_url = "https://bot:s3cr3t-pass@agent.example/hook?token=T0KEN&x=1"
    args = ("p-1", secret_url)
    data = {"args": args, "kwargs": {"nested": [{"url": secret_url}, 7, None]}, "id": "job-1"}
    looping: dict[str, Any] = {"url": secret_url}
    looping["self"] = looping  # a structure that contains itself is walked to a bound, not forever
    logging.getLogger("hermes.test").info(
        "job received",
        extra={"data": data, "looping": looping, "key": "hrm_M31j4wCf78ST3p5re_taNG5mA7TyxXhyHkXMRZX3IQE"},
    )
    line = json_lines()[-1]
    text = json.dumps(line)
    assert "s3cr3t-pass" not in text and "T0KEN" not in text and "Cf78ST3p5re" not in text
    masked = "https://bot:[redacted]@agent.example/hook?token=[redacted]&x=1"
    assert line["data"] == {"args": ["p-1", masked], "kwargs": {"nested": [{"url": masked}, 7, None]}, "id": "job-1"}
    assert line["looping"]["url"] == masked and line["key"] == "hrm_M31j…3IQE"
    # The caller's objects are left as they were: a job's arguments and result are still in use.
    assert data["args"] is args and args[1] == secret_url and looping["url"] == secret_url


def test_userinfo_passwords_are_masked_in_messages_and_exceptions(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    logger = logging.getLogger("hermes.test")
    logger.warning("broker at %s is down", "amqp://hermes:Br0kerPw@rabbit:5672//")
    logger.warning("cache at redis://:R3disPw@redis:6379/0, peer http://peer:w@rd@peer.example/x, plain http://h:80/")
    try:
        raise ConnectionError("cannot reach https://ci:Ex3cPw@ci.example/api")
    except ConnectionError:
        logger.exception("probe failed")
    lines = json_lines()[-3:]
    assert lines[0]["message"] == "broker at amqp://hermes:[redacted]@rabbit:5672// is down"
    assert lines[1]["message"] == (
        "cache at redis://:[redacted]@redis:6379/0, peer http://peer:[redacted]@peer.example/x, plain http://h:80/"
    )
    assert "Ex3cPw" not in lines[2]["exc_info"] and "https://ci:[redacted]@ci.example/api" in lines[2]["exc_info"]


def _worker_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    lines = []
    for raw in worker.output().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


@pytest.mark.django_db(transaction=True)
@override_settings(METRICS_TOKEN="ops-token")
def test_context_follows_a_request_into_the_celery_job(
    client: Client, start_worker: Callable[..., WorkerProcess], http_target: str
) -> None:
    worker = start_worker()
    response = client.post(
        "/api/v1/ops/ping",
        data={"url": http_target},
        content_type="application/json",
        HTTP_X_REQUEST_ID="req-into-job",
        HTTP_AUTHORIZATION="Bearer ops-token",
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 202, response.content
    probe_id = response.json()["id"]
    done = wait_for(lambda: client.get(f"/api/v1/ops/ping/{probe_id}").json().get("status") == "done", timeout=30)
    assert done
    detail = client.get(f"/api/v1/ops/ping/{probe_id}").json()
    assert detail["http_status"] == 204 and detail["duration_ms"] >= 0

    def job_line() -> dict[str, Any] | None:
        return next((r for r in _worker_lines(worker) if r.get("logger") == "apps.ops.tasks"), None)

    line = wait_for(job_line, timeout=10)
    assert set(line) >= REQUIRED
    assert line["request_id"] == "req-into-job" and line["job_id"]
    assert line["message"] == f"ping {http_target} -> 204"

    # Everything bound in the publishing process travels: org, user and the Hermes task.
    with context.bound(request_id="req-bound", org_id=41, user_id=42, task_id="tsk_1"):
        ping_url.delay("p-bound", http_target)
    line = wait_for(
        lambda: next((r for r in _worker_lines(worker) if r.get("request_id") == "req-bound"), None), timeout=30
    )
    assert (line["org_id"], line["user_id"], line["task_id"]) == (41, 42, "tsk_1")
    # Celery's own lines are JSON too (the worker does not hijack the root logger).
    assert any(r["logger"].startswith("celery") for r in _worker_lines(worker))


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="ops-token", METRICS_ALLOWED_IPS=[])
def test_ping_endpoint_refuses_strangers_and_bad_input(client: Client) -> None:
    auth = {"HTTP_AUTHORIZATION": "Bearer ops-token"}
    assert client.post("/api/v1/ops/ping", data={"url": "http://x"}, content_type="application/json").status_code == 403
    assert client.get("/api/v1/ops/ping/abc").status_code == 403
    bad_json = client.post("/api/v1/ops/ping", data="{", content_type="application/json", **auth)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid"
    for url, message in (
        (None, "This field is required."),
        ("ftp://example.com/", "Enter an http:// or https:// URL with a host."),
        ("http://" + "a" * 2000, "At most 2000 characters."),
    ):
        response = client.post("/api/v1/ops/ping", data={"url": url}, content_type="application/json", **auth)
        assert response.status_code == 400 and response.json()["error"]["details"] == {"url": [message]}
    assert client.get("/api/v1/ops/ping/unknown", **auth).status_code == 404


def test_sample_filter_keeps_the_configured_share() -> None:
    def record() -> logging.LogRecord:
        return logging.LogRecord("hermes.probes", logging.INFO, "", 0, "GET /api/v1/health/ready 200", (), None)

    sampler = SampleFilter(rate=0.25)
    kept = sum(sampler.filter(record()) for _ in range(100))
    assert kept == 25
    warning = logging.LogRecord("hermes.probes", logging.WARNING, "", 0, "slow", (), None)
    assert all(sampler.filter(warning) for _ in range(10))
    # A logger configured twice carries two samplers: the first decision holds.
    doubled = logging.Logger("doubled")
    doubled.addFilter(SampleFilter(rate=0.5))
    doubled.addFilter(SampleFilter(rate=0.5))
    passed = 0
    for _ in range(10):
        probe = logging.LogRecord("doubled", logging.INFO, "", 0, "x", (), None)
        passed += bool(doubled.filter(probe))
    assert passed == 5
    silent = SampleFilter(rate=0.0)
    assert sum(silent.filter(record()) for _ in range(50)) == 1  # only the first, then silence


@pytest.mark.django_db
def test_probe_requests_are_sampled_and_other_requests_are_not(
    client: Client, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    for name in NOISY_LOGGERS:
        filters = logging.getLogger(name).filters
        assert any(isinstance(f, SampleFilter) and f.rate == 0.01 for f in filters), name
    for _ in range(150):
        client.get("/api/v1/health/live")
    for _ in range(5):
        client.get("/api/v1/nope")
    lines = json_lines()
    probe_lines = [r for r in lines if r["logger"] == "hermes.probes"]
    assert 1 <= len(probe_lines) <= 3, probe_lines  # 150 probes at 1%
    assert len([r for r in lines if r["logger"] == "hermes.request"]) == 5


def test_websocket_scope_binding() -> None:
    class Org:
        pk = 5

    class User:
        pk = 9
        is_authenticated = True

    context.bind(job_id="stale")
    context.bind_scope({"headers": [(b"x-request-id", b"ws-1")], "access": Access(org=Org(), role=Role.MEMBER)})
    assert context.get_context() == {"request_id": "ws-1", "org_id": 5}
    context.bind_scope({"headers": [], "user": User(), "access": None})
    bound = context.get_context()
    assert bound["user_id"] == 9 and len(bound["request_id"]) == 32 and "org_id" not in bound


@pytest.mark.django_db(transaction=True)  # database_sync_to_async closes connections between calls
def test_websocket_consumers_run_in_the_sockets_context(org: Any, alice: Any) -> None:
    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator
    from channels.generic.websocket import AsyncJsonWebsocketConsumer
    from channels.routing import URLRouter
    from django.urls import path

    from hermes_site.ws_auth import WebSocketAuthMiddleware
    from tests.factories import issue_api_key

    class Echo(AsyncJsonWebsocketConsumer):
        async def connect(self) -> None:
            await self.accept()
            await self.send_json(context.get_context())

    app = WebSocketAuthMiddleware(URLRouter([path("ws/ctx/", Echo.as_asgi())]))
    key, plaintext = issue_api_key(alice, org, ["tasks:read"])

    async def connect(query: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        # channels.testing needs daphne; asgiref's communicator speaks the same ASGI messages.
        scope = {"type": "websocket", "path": "/ws/ctx/", "query_string": query.encode(), "headers": headers}
        communicator = ApplicationCommunicator(app, scope)
        await communicator.send_input({"type": "websocket.connect"})
        assert (await communicator.receive_output(5))["type"] == "websocket.accept"
        sent = await communicator.receive_output(5)
        await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await communicator.wait(5)
        bound: dict[str, Any] = json.loads(sent["text"])
        return bound

    anonymous = async_to_sync(connect)("", [(b"x-request-id", b"ws-req-1")])
    assert anonymous == {"request_id": "ws-req-1"}
    with_key = async_to_sync(connect)(f"api_key={plaintext}", [])
    assert with_key["org_id"] == org.pk and with_key["user_id"] == alice.pk and with_key["api_key_id"] == key.pk
    assert len(with_key["request_id"]) == 32


def test_django_request_adds_only_tracebacks_to_hermes_request_lines(caplog: Any) -> None:
    # Its line for each 4xx/5xx repeated hermes.request's, and called a disabled link's deliberate 503 an ERROR.
    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.utils.log import log_response

    request = RequestFactory().get("/api/v1/federation/receive/alpha")
    with caplog.at_level(logging.INFO, logger="django.request"):
        log_response("Service Unavailable: %s", request.path, response=HttpResponse(status=503), request=request)
        try:
            raise RuntimeError("a bug")
        except RuntimeError as exc:
            error = HttpResponse(status=500)
            log_response("Internal Server Error: %s", request.path, response=error, request=request, exception=exc)
    (line,) = [r for r in caplog.records if r.name == "django.request"]
    assert line.levelname == "ERROR" and line.exc_info is not None and "Internal Server Error" in line.getMessage()
    # And no plain-text copy of Django's lines through its own default console handler (DEBUG): JSON only.
    assert logging.getLogger("django").handlers == []


def test_uvicorns_access_log_stays_off_when_it_was_turned_off() -> None:
    # `--no-access-log` leaves uvicorn.access without handlers and not propagating; uvicorn writes access lines
    # whenever the logger has a handler (its parents' included), so adopting it turned them back on.
    access = logging.getLogger("uvicorn.access")
    saved = (access.handlers[:], access.propagate)
    access.handlers, access.propagate = [], False
    try:
        adopt_server_loggers()
        assert not access.hasHandlers()
    finally:
        access.handlers, access.propagate = saved
