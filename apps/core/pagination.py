from typing import Any

from rest_framework import exceptions
from rest_framework.pagination import Cursor
from rest_framework.pagination import CursorPagination as _Cursor

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

    def decode_cursor(self, request: Any) -> Cursor | None:
        # DRF answers a cursor it cannot decode with 404 "Invalid cursor", which reads as "the list is gone". It is
        # a bad query parameter: 400, naming it, like every other invalid parameter of the API.
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise HermesAPIError(
                "The 'cursor' parameter is not a cursor this list handed out: follow the 'next' and 'previous' "
                "links of a page.",
                code="invalid",
                details={self.cursor_query_param: ["Invalid cursor."]},
            ) from None
