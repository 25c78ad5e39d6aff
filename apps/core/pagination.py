from rest_framework.pagination import CursorPagination as _Cursor


class CursorPagination(_Cursor):
    """Stable pagination for lists that grow while a client pages (newest first)."""

    ordering = ("-created_at", "-pk")
    page_size_query_param = "page_size"
    max_page_size = 200
