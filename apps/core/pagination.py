from base64 import b64decode, b64encode
from typing import Any
from urllib import parse

from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework import exceptions
from rest_framework.pagination import Cursor
from rest_framework.pagination import CursorPagination as _Cursor
from rest_framework.utils.urls import replace_query_param

from apps.core.errors import HermesAPIError, whole_number


class CursorPagination(_Cursor):
    """Stable pagination for lists that grow while a client pages (newest first)."""

    ordering = ("-created_at", "-pk")
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request: Any) -> int:
        # DRF ignores a page_size it cannot use and pages by the default, so a typo goes unnoticed; above the
        # maximum it still clamps (documented: "up to 200").
        return whole_number(
            request.query_params.get(self.page_size_query_param),
            self.page_size_query_param,
            default=self.page_size or self.max_page_size,  # PAGE_SIZE is always set (50)
            minimum=1,
            maximum=self.max_page_size,
        )

    def encode_cursor(self, cursor: Cursor) -> str:
        # DRF's cursor holds only a position, so another list's cursor was read as a position in this one (a
        # shifted page), and an edited position reached the database filter (a 400 about the wrong field, or a
        # page from an arbitrary point). Each cursor is signed for its list: a keyed digest of the path and its
        # own tokens.
        request = self.request  # type: ignore[attr-defined]  # set by paginate_queryset, as base_url
        tokens = {"o": str(cursor.offset), "r": "1" if cursor.reverse else "0"}
        if cursor.position is not None:
            tokens["p"] = str(cursor.position)
        tokens["l"] = _signature(request.path, tokens)
        encoded = b64encode(parse.urlencode(tokens).encode("ascii")).decode("ascii")
        return str(replace_query_param(self.base_url or "", self.cursor_query_param, encoded))

    def decode_cursor(self, request: Any) -> Cursor | None:
        # DRF answers a cursor it cannot decode with 404 "Invalid cursor", which reads as "the list is gone". It is
        # a bad query parameter: 400, naming it, like every other invalid parameter of the API. An empty one means
        # the first page, as an empty parameter means its default everywhere (`?cursor=${next ?? ""}`).
        if request.query_params.get(self.cursor_query_param) == "":
            return None
        try:
            cursor = super().decode_cursor(request)
            if cursor is not None:
                raw = request.query_params[self.cursor_query_param]
                tokens = dict(parse.parse_qsl(b64decode(raw.encode("ascii")).decode("ascii"), keep_blank_values=True))
                signature = tokens.pop("l", "")
                if not constant_time_compare(signature, _signature(request.path, tokens)):
                    raise exceptions.NotFound()
            return cursor
        except exceptions.NotFound:
            raise HermesAPIError(
                "The 'cursor' parameter is not a cursor this list handed out: follow the 'next' and 'previous' "
                "links of a page.",
                code="invalid",
                details={self.cursor_query_param: ["Invalid cursor."]},
            ) from None


def _signature(path: str, tokens: dict[str, str]) -> str:
    signed = "|".join([path.rstrip("/"), *(f"{name}={tokens[name]}" for name in sorted(tokens))])
    return salted_hmac("hermes.cursor", signed, algorithm="sha256").hexdigest()[:16]
