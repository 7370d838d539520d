"""Strict request-body decoding with msgspec, failing with the exact JSON path of the bad value.

Controllers call `await decode_body(request, SomeStruct)` instead of declaring `data:`: msgspec then
decodes the bytes straight into the Struct (no intermediate dict, no lax string-to-number coercion),
and an error names the field, e.g. `lines[2].qty: Expected int >= 1`. A body nested deeper than
`MAX_DEPTH` arrays and objects is refused before decoding, so no later recursion (rules, traces, the
JSON encoder of the answer) meets an unbounded depth.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any, TypeVar

import msgspec
from litestar import Request

from service.errors import FieldError, Invalid, Malformed

T = TypeVar("T")
MAX_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = [1 if c in b"[{" else -1 for c in range(256)]  # an opening bracket goes one level down
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_NAMED = re.compile(r"(?:missing required field|unknown field) `([^`]+)`")
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    return decoder


def field_error(exc: msgspec.ValidationError) -> FieldError:
    """`Expected int, got str - at $.lines[0].qty` -> FieldError("lines[0].qty", "Expected int, got str")."""
    match = _AT.match(str(exc))
    reason = match.group("reason") if match else str(exc)
    path = (match.group("path") or "") if match else ""
    path = path.removeprefix(".")
    named = _NAMED.search(reason)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return FieldError(path or "body", reason.replace("`", ""))


def depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets inside strings do not count)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return 0  # too few brackets to nest too deep: no scan on ordinary bodies
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def decode(raw: bytes, type_: type[T]) -> T:
    if not raw.strip():
        raise Malformed("the request needs a JSON body", [FieldError("body", "empty body")])
    if depth(raw) > MAX_DEPTH:
        reason = f"arrays and objects nest deeper than {MAX_DEPTH} levels, the limit"
        raise Malformed(f"body: {reason}", [FieldError("body", reason)])
    try:
        return _decoder(type_).decode(raw)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        error = field_error(exc)
        raise Invalid(f"{error.field}: {error.reason}", [error]) from None
    except msgspec.DecodeError as exc:
        raise Malformed("the body is not valid JSON", [FieldError("body", str(exc))]) from None


async def decode_body(request: Request[Any, Any, Any], type_: type[T]) -> T:
    return decode(await request.body(), type_)
