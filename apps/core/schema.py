"""OpenAPI generation: every operation's description starts with its auth line (scope and roles), and its
responses include the errors it can answer, in the one error shape of apps.core.errors.

`describe(...)` (apps.core.api) writes the auth line explicitly; for `OrgScopedViewSet` operations without it,
this schema class derives it from the same `required_actions`/`read_action`/`write_action` the permission check
uses, so the documentation cannot drift from the enforcement. The error statuses are derived the same way, from
what makes an operation refuse (authentication, the permission check, a body, query parameters, a detail route,
the throttle, the middleware that refuses a chunked body, the database), plus what `describe(errors=...)` names for
the operation alone (a 409, a 413, ...). An operation that honours `Idempotency-Key` (apps.core.idempotency)
declares the header, the `Idempotent-Replayed` header of a replay and the errors they bring, derived from what makes
it honour them.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from drf_spectacular.drainage import get_override
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_doc
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import permissions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import DefaultContentNegotiation

from apps.core import idempotency
from apps.core.api import Described, OrgScopedMixin, RefuseUnreadBodyMixin, auth_line
from apps.core.errors import DATABASE_RETRY_AFTER_S, answered_media_types
from apps.core.permissions import SCOPES


class ErrorSerializer(serializers.Serializer):
    """The error itself; `code` is what a program branches on, `message` what a person reads."""

    code = serializers.CharField(
        help_text="Stable and machine-readable: `invalid`, `parse_error`, `not_authenticated`, `missing_scope`, "
        "`not_found`, `quota_exceeded`, ... (each operation's error responses name the ones it answers)."
    )
    message = serializers.CharField(help_text="What went wrong and, where it can, what to do about it.")
    details = serializers.DictField(
        help_text="Structured context, `{}` when there is none: per-field messages for `invalid` "
        '(`{"agent": ["Unknown agent."]}`), the binding limit for `quota_exceeded`, the missing scope for '
        "`missing_scope`, ..."
    )


class ErrorEnvelopeSerializer(serializers.Serializer):
    """Every error of the API: `{"error": {"code", "message", "details"}}` (apps.core.errors.error_body)."""

    error = ErrorSerializer()


_INTEGER = {"schema": {"type": "integer"}}
_RATE_LIMIT_HEADERS = {
    "Retry-After": {**_INTEGER, "description": "Seconds until the limit resets."},
    "X-RateLimit-Limit": {**_INTEGER, "description": "The binding limit (requests per minute, or tasks per day)."},
    "X-RateLimit-Remaining": {**_INTEGER, "description": "What is left of it (0 here)."},
    "X-RateLimit-Reset": {**_INTEGER, "description": "When it resets (epoch seconds)."},
}
_CHALLENGE_HEADER = {
    "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'The challenge: `Bearer realm="hermes"`.'}
}
_RETRY_HEADER = {
    "Retry-After": {**_INTEGER, "description": f"Seconds to wait before retrying ({DATABASE_RETRY_AFTER_S})."}
}
# Query parameters that no value can make invalid: every other parameter of the API answers a value it cannot use
# with a 400 naming it (docs/api.md), rather than ignoring it. A bad `Idempotency-Key` has a code of its own.
_UNVALIDATED_PARAMETERS = {"q", idempotency.HEADER}
_IDEMPOTENCY_ERRORS = {
    400: (
        "invalid_idempotency_key",
        f"a malformed `{idempotency.HEADER}` (1 to {idempotency.MAX_KEY_LENGTH} printable characters).",
    ),
    409: ("idempotency_conflict", f"the `{idempotency.HEADER}` was used before with a different request."),
}


class SchemaContentNegotiation(DefaultContentNegotiation):
    """For the schema view only: `?format=json|yaml` picks the document's format, as drf-spectacular documents.

    The API itself has no format parameter (URL_FORMAT_OVERRIDE is off: it only speaks JSON, and DRF answered any
    `?format=` it had no renderer for with a 404). A format the schema does not come in is ignored here too, so
    the answer follows the Accept header."""

    def select_renderer(self, request: Any, renderers: Any, format_suffix: str | None = None) -> Any:
        wanted = format_suffix or request.query_params.get("format")
        if wanted not in {renderer.format for renderer in renderers}:
            wanted = None
        return super().select_renderer(request, renderers, wanted)


def _idempotency_parameters(replayed_statuses: list[str] | bool) -> list[OpenApiParameter]:
    """The request header, and the response header of a replay (on success statuses only: an error response is
    not remembered, so never replayed)."""
    hours = int(idempotency.IDEMPOTENCY_TTL.total_seconds() // 3600)
    return [
        OpenApiParameter(
            idempotency.HEADER,
            {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH},
            OpenApiParameter.HEADER,
            description="Makes a retry safe (a UUID is a good choice). The same key with the same body, within "
            f"{hours} hours (per organization and path), answers the original status and body with "
            f"`{idempotency.REPLAY_HEADER}: true` and creates nothing; with a different body it is a 409 "
            "`idempotency_conflict`. Error responses are not remembered: fix the request and retry with the same "
            "key.",
        ),
        OpenApiParameter(
            idempotency.REPLAY_HEADER,
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            enum=["true"],
            response=replayed_statuses,
            description=f"`true` when this is the remembered response to an earlier request with the same "
            f"`{idempotency.HEADER}`: nothing was created this time. Absent otherwise.",
        ),
    ]


class HermesAutoSchema(AutoSchema):
    def _view_method(self) -> Any:
        return getattr(self.view, getattr(self.view, "action", None) or self.method.lower(), None)

    def _honours_idempotency_key(self) -> bool:
        is_create = self.method == "POST" and getattr(self.view, "action", None) == "create"
        return is_create and isinstance(self.view, idempotency.IdempotentCreateMixin)

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        if self._honours_idempotency_key():
            declared = self.get_response_serializers()
            # Without a status map drf-spectacular documents one response, the success: a replay can be it.
            replayed: list[str] | bool = (
                [str(code) for code in declared if str(code).startswith("2")] if isinstance(declared, dict) else True
            )
            parameters += _idempotency_parameters(replayed)
        return parameters

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> Any:
        schema = super()._map_basic_serializer(serializer, direction)
        # drf-spectacular describes a component with the first docstring in its serializer's MRO, which made
        # StrictFieldsMixin's and PatchSerializer's implementation notes the description of most request bodies:
        # as for operations (get_description), only the serializer's own docstring counts.
        if get_override(serializer, "description") is None and not type(serializer).__dict__.get("__doc__"):
            schema.pop("description", None)
        return schema

    def _described(self) -> Described | None:
        described = getattr(self._view_method(), "hermes_described", None)
        return described if isinstance(described, Described) else None

    def _required_action(self) -> str | None:
        """The action the permission check enforces for this operation (None: none in particular)."""
        described = self._described()
        if described is not None:
            return described.action
        view = self.view
        if not isinstance(view, OrgScopedMixin):
            return None
        name = getattr(view, "action", None) or self.method.lower()
        if name in view.required_actions:
            return view.required_actions[name]
        return view.read_action if self.method in permissions.SAFE_METHODS else view.write_action

    def get_description(self) -> str:  # type: ignore[override]
        # drf-spectacular falls back to the first docstring in the view's MRO, which made a mixin's implementation
        # notes (IdempotentCreateMixin's) the description of GET /tasks: only the view's own docstring counts.
        description = get_doc(self._view_method()) or inspect.cleandoc(type(self.view).__dict__.get("__doc__") or "")
        if "**Auth:**" in description or not isinstance(self.view, OrgScopedMixin):
            return description
        return f"{auth_line(self._required_action())}\n\n{description}".strip()

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        envelope = self.resolve_serializer(ErrorEnvelopeSerializer, "response").ref
        responses = operation["responses"]
        for status_code, (description, headers) in self._error_responses(operation).items():
            response: dict[str, Any] = {
                "description": description,
                "content": {"application/json": {"schema": envelope}},
            }
            if headers:
                response["headers"] = headers
            responses.setdefault(str(status_code), response)
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_responses(self, operation: dict[str, Any]) -> dict[int, tuple[str, dict[str, Any]]]:
        """Status -> (description, headers) of every error this operation can answer."""
        view = self.view
        described = self._described()
        public = described.public if described is not None else False
        public = public or all(isinstance(p, permissions.AllowAny) for p in view.get_permissions())
        has_body = "requestBody" in operation
        own_errors = described.errors if described is not None else {}
        checked_parameters = [
            p["name"]
            for p in operation.get("parameters", [])
            if p["in"] in ("query", "header") and p["name"] not in _UNVALIDATED_PARAMETERS
        ]
        # Any request can carry more query parameters than Django reads (the middleware answers before the view).
        texts: dict[int, list[str]] = {
            400: [
                "`too_many_parameters`: more than 1000 query parameters; `invalid`: a NUL character (`%00`) in the URL."
            ]
        }
        if not public:
            texts[400].append("`org_mismatch`: an API key with an `X-Hermes-Org` header naming another organization.")

        # An operation that reads no body still refuses one (apps.core.api: `request=None`, and every DELETE).
        refuses_body = (
            not has_body and self.method not in permissions.SAFE_METHODS and isinstance(view, RefuseUnreadBodyMixin)
        )
        if has_body:
            texts.setdefault(400, []).append(
                "`invalid`: a field of the body is wrong, with messages per field in `details` (a key the operation "
                "does not take is one too); `parse_error`: the body is not JSON."
            )
        elif refuses_body:
            texts.setdefault(400, []).append(
                "`invalid`: a body was sent (this operation takes none, or `{}`); `parse_error`: it is not JSON."
            )
        if checked_parameters:
            names = ", ".join(f"`{name}`" for name in checked_parameters)
            texts.setdefault(400, []).append(
                f"`invalid`: a parameter ({names}) has a value it cannot use; `details` names it."
            )
        texts[400].append(
            "`invalid`: a query parameter it does not take (only `format` is ignored), or one of its single-value "
            "parameters given twice; `details` names it."
        )
        if self._honours_idempotency_key():
            for status_code, (code, text) in _IDEMPOTENCY_ERRORS.items():
                # An operation that explains the code in its own words keeps them, rather than saying it twice.
                if f"`{code}`" not in own_errors.get(status_code, ""):
                    texts.setdefault(status_code, []).append(f"`{code}`: {text}")
        if not public:
            texts[401] = [
                "`not_authenticated`: no credentials (or ones Hermes does not take: the message says which); "
                "`key_malformed`, `key_unknown`, `key_expired`, `key_revoked`, `key_creator_gone`: the API key."
            ]
            refusals = []
            action = self._required_action()
            if action is not None:
                if action in SCOPES:
                    refusals.append(f"`missing_scope`: the API key lacks `{action}`")
                else:
                    refusals.append(f"`session_required`: `{action}` is not an API-key scope")
                refusals.append("`role_forbidden`: your role may not do this")
            if isinstance(view, OrgScopedMixin):
                refusals.append("`no_organization`: no organization selected (or `X-Hermes-Org` names none of yours)")
            if self.method not in permissions.SAFE_METHODS and any(
                isinstance(authenticator, SessionAuthentication) for authenticator in view.get_authenticators()
            ):
                refusals.append("`permission_denied`: a session request without its CSRF token")
            if refusals:
                texts[403] = ["; ".join(refusals) + "."]
        if lookups := re.findall(r"{(\w+)}", self.path):
            names = " and ".join(f"`{name}`" for name in lookups)
            texts[404] = [
                f"`not_found`: nothing with this {names} you can see (another organization's looks the same)."
            ]
        if self.method not in permissions.SAFE_METHODS:
            # RequestContextMiddleware refuses a chunked body of any unsafe method before routing, whether or not
            # the operation reads one.
            texts[411] = ["`length_required`: a body sent chunked, without `Content-Length` (bodies are read by it)."]
        if has_body or refuses_body:
            texts[415] = ["`unsupported_media_type`: the body is not `application/json`."]
        throttles = view.get_throttles()
        if throttles:
            texts[429] = [
                "`quota_exceeded`: "
                + (
                    "the requests per minute from one address are used up (public endpoints)."
                    if public
                    else "the organization's (or the API key's) requests per minute are used up."
                )
                + " `details` names the limit, when it resets and how to raise it."
            ]
        # DRF's content negotiation refuses an Accept header no renderer of the view matches (apps.core.errors).
        texts[406] = [
            f"`not_acceptable`: the `Accept` header allows none of {answered_media_types(view.get_renderers())}."
        ]
        # Every operation reads the database: authentication reads the API key, or the session and its user, on
        # each request, and the public operations read or write accounts. DatabaseUnavailableMiddleware answers.
        texts[503] = ["`database_unavailable`: the database cannot be reached; nothing was read or changed."]
        for status_code, text in own_errors.items():
            texts.setdefault(status_code, []).append(text)

        headers = {401: _CHALLENGE_HEADER, 429: _RATE_LIMIT_HEADERS, 503: _RETRY_HEADER}
        return {code: (" ".join(parts), headers.get(code, {})) for code, parts in sorted(texts.items())}


class ListLimitsSchema(OpenApiSerializerFieldExtension):
    """States in the schema what a `many=True` serializer enforces on its list: drf-spectacular leaves out
    `allow_empty=False`, `min_length` and `max_length`, which DRF checks (`minItems`, `maxItems`)."""

    target_class = "rest_framework.serializers.ListSerializer"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if not schema:
            return schema
        fewest = max(self.target.min_length or 0, 0 if self.target.allow_empty else 1)
        if fewest:
            schema["minItems"] = fewest
        if self.target.max_length is not None:
            schema["maxItems"] = self.target.max_length
        return schema
