"""Reading JSON that somebody else wrote: request bodies, agent cards, peers' messages, console input.

Two kinds of input used to get past the decoder and fail later, as a 500:

- Python's decoder recurses once per nesting level, so `[[[[…]]]]` a few thousand levels deep raises
  RecursionError — not the ValueError every caller handles.
- JSON the decoder accepts but nothing downstream can store: `NaN`/`Infinity` (not JSON) and numbers past a
  double's range such as `1e999` (read as infinity; PostgreSQL's jsonb refuses them all), a NUL character
  `\\u0000` (jsonb refuses it) and a lone surrogate such as `\\ud800` (not encodable as UTF-8: SQLite stored
  it, then every list holding the row failed to render).

`loads` refuses all of them with the JSONDecodeError a syntax error raises, naming where the bad string is;
`JSONParser` is DRF's parser on top of it (a 400 `parse_error`), and `form_json_object` the console's JSON
fields' parse (a form error). So every JSON body, API, console, peer or command line, is refused before
anything is written.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django import forms
from rest_framework import parsers
from rest_framework.exceptions import ParseError

TOO_DEEP = "the JSON nests too deeply to be read"
# Only an escape can put a NUL or a lone surrogate into a decoded string (raw control characters are a syntax
# error, and UTF-8 cannot encode surrogates), so bodies without one skip the walk: the common case costs a search.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class Refused(json.JSONDecodeError):
    """Well-formed JSON refused for what it holds (too deep, NaN, NUL, lone surrogate): its message says what
    and where; a character position would say nothing."""

    def __init__(self, msg: str, doc: str) -> None:
        super().__init__(msg, doc, 0)

    def __str__(self) -> str:
        return self.msg


class _NotJSONConstant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJSONConstant(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # `1e999` is valid JSON but no double: Python reads it as inf, which nothing downstream can store either.
    value = float(text)
    if math.isinf(value):
        raise _NotJSONConstant(f"the number {text[:40]} is too large to store")
    return value


def _unstorable(value: Any, path: str) -> str | None:
    """Why a decoded value cannot be stored, naming the path of the first bad string; None when it can."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"the string at {path} holds a NUL character (\\u0000), which cannot be stored"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"the string at {path} holds a lone surrogate (U+{ord(value[exc.start]):04X}), which is not "
                "valid Unicode"
            )
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _unstorable(key, f"{path} (a key)") or _unstorable(item, f"{path}.{key}")
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = _unstorable(item, f"{path}[{index}]")
            if problem:
                return problem
    return None


# What no stored string may hold: NUL, and a lone surrogate (half of a UTF-16 pair, decoded from a `\\udXXX` escape).
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """`value` made storable instead of refused: U+FFFD for every NUL or lone surrogate in a string (keys too), and
    a non-finite float as its name ("NaN", "Infinity", "-Infinity"). For what Hermes records but did not decode
    itself, such as an agent's answers as the A2A SDK hands them over: one bad character must not lose the rest."""
    if isinstance(value, str):
        return _UNSTORABLE_CHARS.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def loads(data: str | bytes) -> Any:
    """json.loads that refuses, as a JSONDecodeError, what could not be stored (see the module docstring).
    Bytes must be UTF-8."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise Refused(TOO_DEEP, text) from None
    except _NotJSONConstant as exc:
        raise Refused(str(exc), text) from None
    if "\\u" in text and _SUSPECT_ESCAPE.search(text):
        problem = _unstorable(value, "$")
        if problem:
            raise Refused(problem, text)
    return value


def describe_error(exc: json.JSONDecodeError) -> str:
    """A decode error for people: where the syntax breaks, or what was refused."""
    if isinstance(exc, Refused):
        return exc.msg[0].upper() + exc.msg[1:] + "."
    return f"{exc.msg} (line {exc.lineno}, column {exc.colno})."


def form_json_object(raw: str, not_an_object: str) -> dict[str, Any]:
    """A console form field that holds a JSON object: the object, or the ValidationError to show by the field
    (where the JSON breaks, what was refused, or `not_an_object`)."""
    try:
        value = loads(raw)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(f"Not valid JSON: {describe_error(exc)}") from exc
    if not isinstance(value, dict):
        raise forms.ValidationError(not_an_object)
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser on `loads`: the same 400 `parse_error` for syntax errors, and now for JSON too deep,
    NaN/Infinity, NUL characters and lone surrogates.

    The body is read as UTF-8 whatever `charset` its Content-Type names (RFC 8259: JSON is UTF-8, and the
    parameter has no effect): DRF decoded by it, so UTF-8 labelled `charset=latin-1` (some clients' default) was
    stored, and sent to the agent, as mojibake (`é` became `Ã©`)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"JSON parse error - the body is not UTF-8 (byte {exc.start}): JSON bodies are UTF-8, whatever "
                "charset the Content-Type names."
            ) from None
        try:
            return loads(text)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


def encoded_size(value: Any) -> int:
    """Bytes of `value` as Hermes stores and sends it (compact UTF-8 JSON): the one measure of every size limit,
    so that whether an input fits does not depend on how the client escaped it."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
