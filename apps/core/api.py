"""DRF base classes: the one way an API view reaches org-owned data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, viewsets
from rest_framework.exceptions import UnsupportedMediaType, ValidationError
from rest_framework.request import Request

from apps.core import context
from apps.core.errors import HermesAPIError, json_error
from apps.core.http import header_text
from apps.core.permissions import SCOPES, Access, Role, role_allows, role_refusal


def access_of(request: Request) -> Access:
    access = getattr(request, "auth", None)
    if not isinstance(access, Access):
        named = header_text(request.headers.get("X-Hermes-Org"))
        if named:
            message = (
                f"You are not a member of an organization '{named[:60]}' (X-Hermes-Org); GET /api/v1/orgs lists yours."
            )
        elif _in_no_org(request.user):
            # E.g. removed from their only org: there is nothing to pick, and no key they may make.
            message = "You belong to no organization: create one, or ask an owner to invite you."
        else:
            message = "No organization selected: use an API key, or pick an organization in the console first."
        raise HermesAPIError(message, code="no_organization", status_code=403)
    return access


def _in_no_org(user: Any) -> bool:
    # Through the user's related manager (Membership's `user` FK): core imports no domain app.
    return bool(getattr(user, "is_authenticated", False)) and not user.memberships.exists()


def require_action(access: Access, action: str) -> None:
    """The one guard: raise a 403 naming the missing scope (API key) or the role that may not act.

    API permissions, actions and console views all call this, so every surface refuses in the same words."""
    if access.allows(action):
        return
    if access.scopes is not None and action not in SCOPES:
        # No key can hold it: asking for the scope would send the caller after something that does not exist.
        raise HermesAPIError(
            f"'{action}' is done with a signed-in session (the console, or the API with its session cookie): it is "
            "not an API-key scope.",
            code="session_required",
            status_code=403,
            details={"required_action": action},
        )
    if access.scopes is not None and action not in access.scopes:
        raise HermesAPIError(
            f"This API key lacks the scope '{action}'.",
            code="missing_scope",
            status_code=403,
            details={"required_scope": action},
        )
    raise HermesAPIError(
        role_refusal(access.role, action),
        code="role_forbidden",
        status_code=403,
        details={"required_action": action, "role": access.role},
    )


class OrgActionPermission(permissions.BasePermission):
    """Checks `view.required_actions[view.action]` (or per HTTP method) against the role matrix and key scopes."""

    message = "Permission denied."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        action = view.required_action(request)
        if action is None:
            return True
        require_action(access_of(request), action)
        return True


# Query parameters every operation tolerates and ignores: `format` (docs/api.md: DRF's URL_FORMAT_OVERRIDE is
# off, and a client adding `?format=json` is not refused for it).
TOLERATED_QUERY_PARAMETERS = frozenset({"format"})


def query_parameters(view: Any, name: str) -> dict[str, bool] | None:
    """The query parameters operation `name` (a viewset action, or an HTTP method) of `view` reads, each with
    whether it may be repeated: those its `describe()` declares, and the paginator's on a paginated list. None for
    an operation not `describe()`d (nothing is known of it)."""
    described = getattr(getattr(view, name, None), "hermes_described", None)
    if not isinstance(described, Described):
        return None
    names = dict(described.query)
    paginator = getattr(view, "paginator", None)
    if name == "list" and paginator is not None:
        for param in (
            getattr(paginator, "cursor_query_param", None),
            getattr(paginator, "page_size_query_param", None),
        ):
            if param:
                names[param] = False
    return names


def _refuse_query(request: Request, expected: dict[str, bool]) -> None:
    """A query parameter the operation does not read was ignored: `?statuses=failed` (a typo), `?limit=` on a list
    paged by `page_size`, answered the whole unfiltered list as if it matched. And a single-value parameter given
    twice answered by its last value, whichever the client meant."""
    problems: dict[str, list[str]] = {}
    for name, values in request.query_params.lists():
        if name in TOLERATED_QUERY_PARAMETERS:
            continue
        if name not in expected:
            takes = ", ".join(f"'{known}'" for known in expected) if expected else "no query parameters"
            problems[name[:60]] = [f"Unknown query parameter: this endpoint takes {takes}."]
        elif len(values) > 1 and not expected[name]:
            problems[name] = [f"Give this parameter once (it came {len(values)} times)."]
    if problems:
        raise ValidationError(problems)


class RefuseUnreadBodyMixin:
    """An operation that reads no body (every DELETE, and those `describe()`d without one) refuses one that came
    anyway; see `_refuse_body`. So does a query parameter it does not read (`_refuse_query`), and a session-only
    operation an API key (`describe(session_only=…)`). Part of every org-scoped view; a view outside the org scope
    mixes it in itself."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        name = getattr(self, "action", None) or (request.method or "get").lower()
        handler = getattr(self, name, None)
        described = getattr(handler, "hermes_described", None)
        if described is not None and described.session_only and getattr(request.auth, "api_key", None) is not None:
            raise HermesAPIError(described.session_only, code="session_required", status_code=403)
        expected = query_parameters(self, name)
        if expected is not None:
            _refuse_query(request, expected)
        # No DELETE of the API reads a body either (a `{"dry_run": true}` deleted all the same).
        reads_none = request.method == "DELETE" or (described is not None and not described.takes_body)
        if reads_none and _has_body(request):
            lookup = getattr(self, "lookup_url_kwarg", None) or getattr(self, "lookup_field", None)
            if lookup in kwargs:
                self.get_object()  # type: ignore[attr-defined]  # another org's object stays a 404 first
            _refuse_body(request)


class OrgScopedMixin(RefuseUnreadBodyMixin):
    """Owns get_queryset: subclasses name `model` and may only narrow `scoped_queryset()`.

    `required_actions` maps a viewset action (or an HTTP method) to a matrix action; safe methods default to
    `read_action` and unsafe ones to `write_action`.
    """

    model: Any = None
    read_action: str | None = None
    write_action: str | None = None
    required_actions: dict[str, str] = {}
    permission_classes = [permissions.IsAuthenticated, OrgActionPermission]
    request: Request

    def perform_authentication(self, request: Request) -> None:
        super().perform_authentication(request)  # type: ignore[misc]
        # From here on every log line (and every Celery job enqueued) carries the org and user.
        context.bind_access(getattr(request, "auth", None))

    def required_action(self, request: Request) -> str | None:
        name = getattr(self, "action", None) or (request.method or "get").lower()
        if name in self.required_actions:
            return self.required_actions[name]
        return self.read_action if request.method in permissions.SAFE_METHODS else self.write_action

    @property
    def access(self) -> Access:
        return access_of(self.request)

    @property
    def org(self) -> Any:
        return self.access.org

    def scoped_queryset(self) -> QuerySet[Any]:
        return self.model.objects.for_org(self.org)

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset()


def _has_body(request: Request) -> bool:
    return bool(int(request.META.get("CONTENT_LENGTH") or 0) or "HTTP_TRANSFER_ENCODING" in request.META)


_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _refuse_body(request: Request) -> None:
    """An operation that reads no body (a cancel, a revoke) answered 2xx to any body, so `{"reason": …}` or a
    typo looked accepted. A body is parsed as any other (415 for another media type, 400 for broken JSON) and
    anything but an empty object is refused."""
    raw = request._request
    if raw.content_type in _FORM_TYPES:
        # Django reads form encodings itself: an empty form (a bare form post, Django's test client) is no body;
        # any field in one is a body of a media type the API does not take.
        if raw.POST or raw.FILES:
            raise UnsupportedMediaType(raw.content_type)
        return
    data = request.data
    if isinstance(data, Mapping):
        if data:
            raise ValidationError({name: ["Unknown field: this endpoint takes no body."] for name in sorted(data)})
    else:
        raise ValidationError({"non_field_errors": ["This endpoint takes no body."]})


class OrgScopedViewSet(OrgScopedMixin, viewsets.GenericViewSet):  # type: ignore[misc]
    lookup_value_regex = "[^/]+"


def auth_line(action: str | None, *, public: bool = False, session_only: bool = False) -> str:
    """The sentence every operation's description starts with: which scope a key needs, which roles may act."""
    if public:
        return "**Auth:** none (public endpoint)."
    if session_only:
        return "**Auth:** session only (any API key gets 403 `session_required`); no particular role."
    if action is None:
        return "**Auth:** API key (any scope) or session; no particular role."
    roles = ", ".join(role.value for role in Role if role_allows(role, action))
    if action in SCOPES:
        return f"**Auth:** API key with scope `{action}`, or session. **Roles:** {roles}."
    return f"**Auth:** session only (`{action}` is not an API-key scope). **Roles:** {roles}."


@dataclass(frozen=True)
class Described:
    """What `describe` tells the schema about an operation besides its text (read by HermesAutoSchema)."""

    action: str | None
    public: bool
    errors: dict[int, str]
    takes_body: bool = True  # False for `request=None`: an operation that reads no body refuses one (see initial)
    query: tuple[tuple[str, bool], ...] = ()  # its query parameters: (name, may repeat); others are refused
    session_only: str = ""  # for an operation no API key may call: the 403 `session_required` message


def describe(
    summary: str,
    *,
    action: str | None,
    notes: str = "",
    public: bool = False,
    session_only: str = "",
    errors: dict[int, str] | None = None,
    **kwargs: Any,
) -> Callable[[Any], Any]:
    """`extend_schema` with the auth line. `action=None`: any authenticated caller; `public=True`: no auth;
    `session_only`: signed-in people only, an API key is refused with this message (403 `session_required`).

    `errors` documents the error statuses only this operation answers, `{409: "`task_finished`: …"}`, or adds to
    what HermesAutoSchema derives for every operation from its shape (400 for a body or query parameters, 401/403
    when authenticated, 404 on a detail route, 411 for an unsafe method, 415 for a body, 429 when throttled, 503
    for all; the `Idempotency-Key` header and its 400/409 codes for a create that honours it, unless `errors`
    names those codes in its own words).

    Operations of `OrgScopedViewSet`s without `describe` get the auth line from their `required_actions`/
    `read_action`/`write_action` automatically (apps.core.schema.HermesAutoSchema)."""
    if public:
        kwargs.setdefault("auth", [])
    description = f"{auth_line(action, public=public, session_only=bool(session_only))}\n\n{notes}".strip()
    annotate = extend_schema(summary=summary, description=description, **kwargs)

    def decorator(view_method: Any) -> Any:
        view_method = annotate(view_method)
        view_method.hermes_described = Described(
            action=action,
            public=public,
            errors={**({403: "`session_required`: not with an API key."} if session_only else {}), **(errors or {})},
            session_only=session_only,
            takes_body=kwargs.get("request", True) is not None,
            query=tuple(
                (parameter.name, bool(parameter.many))
                for parameter in kwargs.get("parameters", ())
                if isinstance(parameter, OpenApiParameter) and parameter.location == OpenApiParameter.QUERY
            ),
        )
        return view_method

    return decorator


@csrf_exempt  # the view it hands over to does its own (DRF's session authentication enforces CSRF)
def api_fallback(request: HttpRequest, unmatched: str = "") -> HttpResponse:
    """The last route under /api/v1/. API paths are written without a trailing slash; a client or proxy that
    adds one is served by the same endpoint (not redirected: a redirect would drop a POST's body), and any other
    path is a JSON 404 — Django's own 404 is an HTML page, a 30 KB one with DEBUG on."""
    if request.path.endswith("/"):
        try:
            match = resolve(request.path.rstrip("/"))
        except Resolver404:
            pass
        else:
            if match.func is not api_fallback:
                request.resolver_match = match
                response: HttpResponse = match.func(request, *match.args, **match.kwargs)
                return response
    return json_error(
        request, "not_found", f"There is no API endpoint at {request.path}; /api/v1/docs/ lists them.", 404
    )
