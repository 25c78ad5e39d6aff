"""Reading JSON that somebody else wrote: request bodies, agent cards, peers' messages, console input.

Python's decoder recurses once per nesting level, so `[[[[…]]]]` a few thousand levels deep raises
RecursionError — not the ValueError every caller handles — and became a 500 with a traceback on any JSON
endpoint, the unauthenticated ones included. `loads` turns it into the JSONDecodeError a syntax error raises;
`JSONParser` is DRF's parser with the same guard (a 400 `parse_error`), and `form_json_object` the console's JSON
fields' parse (a form error).
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from rest_framework import parsers
from rest_framework.exceptions import ParseError

TOO_DEEP = "the JSON nests too deeply to be read"


def loads(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        raise json.JSONDecodeError(TOO_DEEP, text, 0) from None


def form_json_object(raw: str, not_an_object: str) -> dict[str, Any]:
    """A console form field that holds a JSON object: the object, or the ValidationError to show by the field
    (where the JSON breaks, or `not_an_object`)."""
    try:
        value = loads(raw)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from exc
    if not isinstance(value, dict):
        raise forms.ValidationError(not_an_object)
    return value


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - {TOO_DEEP}") from None
