"""Strict request-body decoding with msgspec, failing with the exact JSON path of the bad value.

A handler declares the type it accepts as Litestar's `data: T` parameter; the app's request class
(`StrictRequest`) decodes the bytes straight into `T` (no intermediate dict, no lax string-to-number
coercion), and an error names the field, e.g. `lines[2].qty: Expected int >= 1`. Before decoding, a
body nested deeper than `MAX_DEPTH` arrays and objects, or holding a NUL character, is refused, so no
later recursion (rules, traces, the JSON encoder of the answer) meets an unbounded depth and no text the
database cannot store gets in. An optional body (`data: JSONBody[T] = DEFAULT`) may be empty (the
handler gets the default); a required one may not (`require_body`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import Empty

from service.errors import FieldError, Invalid, Malformed, ServiceError

T = TypeVar("T")
MAX_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = tuple(1 if c in b"[{" else -1 for c in range(256))  # an opening bracket goes one level down
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_NAMED = re.compile(r"(?:missing required field|unknown field) `([^`]+)`")
_READING = "body_reading"  # the key of a handler's `_Reading` in its `opt`, made on its first request
JSON_TYPES = ("application/json", "")


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


# `\u0000` escaped in a JSON string: an odd number of backslashes before `u0000` (an even number is a
# literal backslash followed by the text "u0000")
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets inside strings do not count)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return 0  # too few brackets to nest too deep: no scan on ordinary bodies
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _empty() -> Malformed:
    return Malformed("the request needs a JSON body", [FieldError("body", "empty body")])


def check(raw: bytes) -> None:
    """Refuse, before any decoding, an empty body, one nested too deep, or one holding a NUL character."""
    if not raw.strip():
        raise _empty()
    if depth(raw) > MAX_DEPTH:
        reason = f"arrays and objects nest deeper than {MAX_DEPTH} levels, the limit"
        raise Malformed(f"body: {reason}", [FieldError("body", reason)])
    if b"\\u0000" in raw and _NUL_ESCAPE.search(raw):
        # PostgreSQL cannot store U+0000 in text, and no field of this service has a use for it
        reason = "strings may not contain the NUL character (\\u0000)"
        raise Invalid(f"body: {reason}", [FieldError("body", reason)])


def decode_with(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    check(raw)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        error = field_error(exc)
        raise Invalid(f"{error.field}: {error.reason}", [error]) from None
    except msgspec.DecodeError as exc:
        raise Malformed("the body is not valid JSON", [FieldError("body", str(exc))]) from None


def decode(raw: bytes, type_: type[T]) -> T:
    """Decode one JSON text into `type_` with the checks and errors of a request body."""
    return decode_with(msgspec.json.Decoder(type_), raw)


def unsupported_media(media: str, accepted: str) -> ServiceError:
    return ServiceError(
        f"unsupported content type {media!r}",
        [FieldError("content-type", f"send {accepted}")],
        415,
        "Unsupported media type",
    )


async def require_body(request: Request[Any, Any, Any]) -> None:
    """The app's `before_request`: an empty body sent to a handler whose body is required is refused in
    the same words as any other unusable body (Litestar would pass no `data` and name a missing argument)."""
    field = request.route_handler.parsed_fn_signature.parameters.get("data")
    required = field is not None and not field.has_default and not field.is_optional
    if required and not (await request.body()).strip():
        raise _empty()


class StrictRequest(Request[Any, Any, Any]):
    """The app's request class: `json()` decodes the body into the handler's `data` type.

    Litestar reads a `data: T` parameter by calling `json()` and then converting what it returns to `T`;
    here `json()` already returns a `T` (the conversion passes it through unchanged), decoded strictly
    with the checks above. A type that also reads other media types says so with a `from_media(media,
    raw)` class method (e.g. a ruleset version sent as YAML text).
    """

    async def body(self) -> bytes:
        """The body, read from the ASGI receive messages as the framework's `body()` reads them (the same
        size limit and errors: 413 past the handler's limit, announced or streamed, 400 for a malformed
        content-length), without its generic streaming steps."""
        if self._body is not Empty:
            return self._body
        state = self._connection_state
        if state.body is not Empty:
            self._body = state.body
            return self._body
        if not self.is_connected:
            raise InternalServerException("stream consumed")
        limit = self.route_handler.resolve_request_max_body_size() or math.inf
        announced = self._announced_length()
        if announced is not None and announced > limit:
            raise RequestEntityTooLarge
        chunks: list[bytes] = []
        total = 0
        while True:
            event: Any = await self.receive()  # one ASGI receive message
            kind = event["type"]
            if kind == "http.request":
                chunk = event.get("body", b"")
                if chunk:
                    total += len(chunk)
                    if total > limit:
                        raise RequestEntityTooLarge
                    chunks.append(chunk)
                if not event.get("more_body", False):
                    break
            elif kind == "http.disconnect":
                raise InternalServerException("client disconnected prematurely")
        self.is_connected = False
        self._body = state.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    def _header(self, name: bytes) -> str | None:
        """The first value of the header `name` (lower case), as `self.headers.get` reads it, without
        building the framework's header map of the whole request for it."""
        for key, value in self.scope["headers"]:
            if key == name or key.lower() == name:
                return value.decode("latin-1")
        return None

    def _announced_length(self) -> int | None:
        """`content_length`, read with `_header`: the same value, and the same 400 for one not a number."""
        announced = self._header(b"content-length")
        try:
            return None if announced is None else int(announced)
        except ValueError:
            raise ClientException(f"Invalid content-length: {announced!r}") from None

    async def json(self) -> Any:
        if self._json is not Empty:
            return self._json
        handler = self.route_handler
        reading: _Reading | None = handler.opt.get(_READING)
        if reading is None:
            reading = _Reading.of(handler)
            if reading is None:  # no declared body: the framework's own reading
                return await super().json()
            handler.opt[_READING] = reading
        raw = await self.body()
        if reading.from_media is not None:
            media = (self._header(b"content-type") or "").split(";")[0].strip().lower()
            if media not in JSON_TYPES:
                self._json = reading.from_media(media, raw)
                return self._json
        if reading.optional and not raw.strip():
            self._json = reading.default
            return self._json
        self._json = decode_with(reading.decoder, raw)
        return self._json


@dataclass(frozen=True, slots=True)
class _Reading:
    """How a handler's `data` is read: its decoder, its reader of other media types (`from_media`), and
    the default of an optional body. Made on the handler's first request and kept in its `opt`."""

    decoder: msgspec.json.Decoder[Any]
    from_media: Callable[[str, bytes], Any] | None
    optional: bool
    default: Any

    @classmethod
    def of(cls, handler: Any) -> _Reading | None:
        """The handler's reading; None when it declares no `data`."""
        field = handler.parsed_fn_signature.parameters.get("data")
        if field is None:
            return None
        type_ = field.annotation
        reader = getattr(type_, "from_media", None)
        return cls(msgspec.json.Decoder(type_), reader, field.has_default, field.default)
