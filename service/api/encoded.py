"""`JsonAnswer`: the response class of the decision endpoints, a JSON answer sent with the least work.

A handler still returns its answer Struct (the OpenAPI document is made from that); Litestar wraps it in
the route's response class, and this one encodes it with one msgspec encoder (the framework's own
serializer for any type JSON does not know, so the bytes are those Litestar's default would send) and
sends it as two ASGI messages: status with `content-type`, `content-length` and the answer's own
`headers`, then the body. A handler may also return one itself (e.g. with a status and a header). Only
for routes that declare no headers, cookies or background tasks (it refuses them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.response import Response
from litestar.response.base import ASGIResponse
from litestar.serialization import get_serializer
from litestar.types import Receive, Scope, Send

if TYPE_CHECKING:
    from litestar.app import Litestar
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.connection import Request
    from litestar.datastructures import Cookie
    from litestar.enums import MediaType
    from litestar.types import TypeEncodersMap

_ENCODER = msgspec.json.Encoder(enc_hook=get_serializer())  # stateless; the framework's fallback hook
_CONTENT_TYPE = (b"content-type", b"application/json")


class _Encoded(ASGIResponse):
    """An encoded JSON body and its status, ready to send."""

    __slots__ = ("extra",)

    def __init__(self, body: bytes, status_code: int, extra: list[tuple[bytes, bytes]]) -> None:
        # none of ASGIResponse's own set-up: nothing but these is sent
        self.body = body
        self.status_code = status_code
        self.extra = extra

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.body
        headers = [_CONTENT_TYPE, (b"content-length", str(len(body)).encode())]
        if self.extra:
            headers += self.extra
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def encoded(content: Any, status_code: int) -> ASGIResponse:
    """`content` encoded as JSON, ready to send with `status_code` and no other header."""
    return _Encoded(_ENCODER.encode(content), status_code, [])


class JsonAnswer(Response[Any]):
    """A route's response class for JSON answers with nothing but a body and a status."""

    def __init__(
        self,
        content: Any,
        *,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | BackgroundTasks | None = None,
        **unused: Any,
    ) -> None:
        if background is not None:
            raise TypeError("JsonAnswer sends no background tasks")
        self.content = content
        self.status_code = status_code or 200
        self.extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        if background is not None or cookies or headers or encoded_headers or is_head_response:
            raise TypeError("JsonAnswer sends a body and a status only")
        return _Encoded(_ENCODER.encode(self.content), self.status_code or 200, self.extra)
