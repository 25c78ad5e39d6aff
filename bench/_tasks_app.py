"""Server side of bench/tasks.py: Hermes' own WSGI/ASGI apps plus the two baselines the benchmark compares with.

- `/bench/bare-insert`: a bare DRF view (no authentication, permissions, throttling or idempotency) inserting one
  row, served by the same gunicorn as `POST /api/v1/tasks`.
- `/bench/keyed-insert` (`--ablation` only): the same insert behind API-key authentication, scope and request quota.
- `/ws/bench/fanout/`: a bare Channels consumer that joins one group and forwards what it receives, served by the
  same uvicorn as `/ws/tasks/<id>/`.
Run with DJANGO_SETTINGS_MODULE=hermes_site.settings; ROOT_URLCONF is swapped to this module's `urlpatterns`.

`HERMES_BENCH_WITHOUT` (comma-separated, only for `python -m bench.tasks --ablation`) switches parts of the submit
path off in this server, to measure what each costs: `enqueue` (the Celery publish), `broadcast` (the org-stream
publish), `audit` (the audit row), `quota` (both Redis quota counters). Hermes itself never runs without them.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")

import django
from django.conf import settings

django.setup()
settings.ROOT_URLCONF = __name__

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from django.db import connection  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.permissions import AllowAny  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from apps.core.api import OrgScopedMixin  # noqa: E402
from apps.orgs.models import PLAN_LIMITS, Plan, PlanLimits  # noqa: E402
from hermes_site import urls as hermes_urls  # noqa: E402

# The quota check still runs on every submit; the limits are only raised so that it never refuses the benchmark.
PLAN_LIMITS[Plan.ENTERPRISE] = PlanLimits(requests_per_minute=10**9, tasks_per_day=10**9)
FANOUT_GROUP = "bench-fanout"


def _published(task: Any, events: Any, *, state_changed: bool) -> bool:
    return True


def _ablate(parts: set[str]) -> None:
    from apps.orgs import quotas
    from apps.tasks import broadcast
    from apps.tasks import tasks as task_jobs

    unknown = parts - {"enqueue", "broadcast", "audit", "quota"}
    if unknown:
        raise SystemExit(f"HERMES_BENCH_WITHOUT: unknown part(s) {sorted(unknown)}")
    if "enqueue" in parts:
        task_jobs.dispatch = lambda task_id, countdown=0: None
    if "broadcast" in parts:
        broadcast.publish = _published
    if "audit" in parts:
        from apps.core.models import AuditEvent
        from apps.tasks import actions

        insert = actions.insert_together
        # The submit writes its audit row in the same statement as the task: leave it out of that statement.
        actions.insert_together = lambda *objs, **kw: insert(*(o for o in objs if not isinstance(o, AuditEvent)), **kw)
    if "quota" in parts:
        quotas.reserve_task = lambda org, now=None: None
        quotas.OrgQuotaThrottle.allow_request = lambda self, request, view: True  # type: ignore[method-assign]


_ablate({part for part in os.environ.get("HERMES_BENCH_WITHOUT", "").split(",") if part})


class BareInsert(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    def post(self, request: Any) -> Response:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_row (body) VALUES (%s) RETURNING id", [str(request.data)[:1000]])
            (row_id,) = cursor.fetchone()
        return Response({"id": row_id}, status=202)


class KeyedInsert(OrgScopedMixin, BareInsert):  # type: ignore[misc]
    """The bare insert behind what every Hermes API request pays: API-key authentication, the `tasks:write`
    role x scope check and the request-quota throttle (as bench/auth.py's `key+scope+quota`). `--ablation` only:
    the floor under any submit that authenticates each request, whatever it then does."""

    write_action = "tasks:write"
    authentication_classes = list(APIView.authentication_classes)  # the project defaults again
    throttle_classes = list(APIView.throttle_classes)


class BareFanout(AsyncJsonWebsocketConsumer):
    groups = [FANOUT_GROUP]

    async def bench_event(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "event", "event": message["event"]})


urlpatterns = [
    path("bench/bare-insert", BareInsert.as_view()),
    path("bench/keyed-insert", KeyedInsert.as_view()),
    *hermes_urls.urlpatterns,
]
handler404 = hermes_urls.handler404
handler500 = hermes_urls.handler500


def wsgi() -> Any:
    from hermes_site.wsgi import application

    return application


def asgi() -> Any:
    from channels.routing import ProtocolTypeRouter, URLRouter

    from hermes_site import asgi as hermes_asgi
    from hermes_site.routing import websocket_urlpatterns
    from hermes_site.ws_auth import WebSocketAuthMiddleware

    routes = [path("ws/bench/fanout/", BareFanout.as_asgi()), *websocket_urlpatterns]
    return ProtocolTypeRouter(
        {"http": hermes_asgi.application, "websocket": WebSocketAuthMiddleware(URLRouter(routes))}
    )


wsgi_application = wsgi() if os.environ.get("HERMES_BENCH_SERVER") == "wsgi" else None
asgi_application = asgi() if os.environ.get("HERMES_BENCH_SERVER") == "asgi" else None
