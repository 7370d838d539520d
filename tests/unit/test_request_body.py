"""`StrictRequest.body()` reads the ASGI receive messages itself: a body in several chunks arrives whole,
and one past the size limit is refused whether its length was announced or only streamed."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, post
from litestar.params import JSONBody

from service.api.body import StrictRequest
from tests.unit.asgi_post import asgi_post


class Order(msgspec.Struct):
    sku: str
    qty: int


@post("/orders", status_code=200)
async def take(data: JSONBody[Order]) -> dict[str, Any]:
    return {"sku": data.sku, "qty": data.qty}


APP = Litestar([take], request_class=StrictRequest, request_max_body_size=64)


async def send(chunks: list[bytes], announce: bool | bytes) -> tuple[int, bytes]:
    """POST the chunks; `announce`: send their length as content-length (True) or this value."""
    headers = [(b"content-type", b"application/json")]
    if announce is True:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    elif announce:
        headers.append((b"content-length", announce))
    return await asgi_post(APP, "/orders", headers, chunks)


async def test_a_body_in_several_chunks_is_read_whole() -> None:
    status, body = await send([b'{"sku": "TE', b"", b'E-001", "qty"', b": 3}"], announce=False)
    assert status == 200 and msgspec.json.decode(body) == {"sku": "TEE-001", "qty": 3}


async def test_a_body_past_the_limit_is_413_announced_or_streamed() -> None:
    big = [b'{"sku": "' + b"x" * 40, b"y" * 40 + b'", "qty": 1}']
    assert (await send(big, announce=True))[0] == 413
    assert (await send(big, announce=False))[0] == 413


async def test_a_body_at_the_limit_is_read() -> None:
    exact = b'{"sku": "' + b"x" * (64 - 21) + b'", "qty": 1}'
    assert len(exact) == 64
    assert (await send([exact[:10], exact[10:]], announce=False))[0] == 200


async def test_an_announced_length_past_the_limit_is_413_before_reading() -> None:
    assert (await send([b'{"sku": "A", "qty": 1}'], announce=b"65"))[0] == 413


async def test_a_content_length_that_is_not_a_number_is_400() -> None:
    status, body = await send([b'{"sku": "A", "qty": 1}'], announce=b"twenty")
    assert status == 400 and b"Invalid content-length: 'twenty'" in body
