"""Webhook subscriptions and deliveries (role admin): who receives which events, and how that went.

`PUT /v1/subscriptions` replaces the whole set; a secret, once given, is never shown again (an update
may leave it out to keep it). `GET /v1/deliveries` lists deliveries by status and
`POST /v1/deliveries/{id}/retry` gives a dead one a fresh set of attempts. docs/approvals.md, "Webhooks".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Router, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy import delete, select

from service.api.openapi import answers
from service.db.base import aware
from service.db.models import Delivery, Subscription
from service.errors import Conflict, FieldError, Invalid, NotFound
from service.security import principal_of, requires
from service.security.audit import audit
from service.services import Services
from service.workflow.dispatcher import DeliveryStateError, UnknownDelivery, retry
from service.workflow.subscriptions import pattern_problem, url_problem

SubscriptionId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
DeliveryStatus = Literal["pending", "delivered", "dead"]


class SubscriptionIn(msgspec.Struct, forbid_unknown_fields=True):
    id: SubscriptionId
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    events: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(min_length=1, max_length=50)
    ]
    # required for a new subscription; left out, an existing subscription keeps its secret
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=200)] | None = None


class SubscriptionOut(msgspec.Struct):
    id: str
    url: str
    events: list[str]
    created_at: datetime
    updated_at: datetime


class SubscriptionsOut(msgspec.Struct):
    subscriptions: list[SubscriptionOut]


class DeliveryOut(msgspec.Struct):
    id: str
    event_id: str
    kind: str
    subscription_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None  # the HTTP status or the kind of failure ("timeout", "connection failed")
    created_at: datetime
    delivered_at: datetime | None


class DeliveriesOut(msgspec.Struct):
    deliveries: list[DeliveryOut]
    next: str | None  # pass as `before` for the next page


def _subscription_out(row: Subscription) -> SubscriptionOut:
    return SubscriptionOut(row.id, row.url, list(row.events), aware(row.created_at), aware(row.updated_at))


def delivery_out(row: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        event_id=row.event_id,
        kind=row.kind,
        subscription_id=row.subscription_id,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=aware(row.next_attempt_at) if row.status == "pending" else None,
        last_attempt_at=aware(row.last_attempt_at) if row.last_attempt_at else None,
        last_error=row.last_error,
        created_at=aware(row.created_at),
        delivered_at=aware(row.delivered_at) if row.delivered_at else None,
    )


async def _all(services: Services) -> SubscriptionsOut:
    async with services.sessions() as session:
        rows = (await session.execute(select(Subscription).order_by(Subscription.id))).scalars()
        return SubscriptionsOut([_subscription_out(row) for row in rows])


@get("/subscriptions", opt=requires("admin"), operation_id="listSubscriptions")
async def list_subscriptions(services: NamedDependency[Services]) -> SubscriptionsOut:
    """Every subscription, without its secret."""
    return await _all(services)


@put("/subscriptions", opt=requires("admin"), operation_id="putSubscriptions", status_code=200)
async def put_subscriptions(
    services: NamedDependency[Services], request: Request[Any, Any, Any], data: JSONBody[list[SubscriptionIn]]
) -> SubscriptionsOut:
    """Replace the set of subscriptions. A removed subscription's pending deliveries are dropped."""
    wanted = data
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, item in enumerate(wanted):
        if item.id in seen:
            errors.append(FieldError(f"[{index}].id", f"{item.id!r} appears twice"))
        seen.add(item.id)
        reason = url_problem(item.url)
        if reason:
            errors.append(FieldError(f"[{index}].url", reason))
        for at, pattern in enumerate(item.events):
            reason = pattern_problem(pattern)
            if reason:
                errors.append(FieldError(f"[{index}].events[{at}]", reason))
    now = datetime.now(UTC)
    actor = principal_of(request).name
    async with services.sessions() as session, session.begin():
        existing = {row.id: row for row in (await session.execute(select(Subscription))).scalars()}
        for index, item in enumerate(wanted):
            if item.secret is None and item.id not in existing:
                errors.append(FieldError(f"[{index}].secret", "required for a new subscription"))
        if errors:
            raise Invalid(f"{errors[0].field}: {errors[0].reason}", errors)
        removed = [sid for sid in existing if sid not in seen]
        if removed:
            await session.execute(delete(Subscription).where(Subscription.id.in_(removed)))
            await session.execute(
                delete(Delivery).where(Delivery.subscription_id.in_(removed), Delivery.status == "pending")
            )
        for item in wanted:
            row = existing.get(item.id)
            if row is None:
                assert item.secret is not None
                session.add(
                    Subscription(
                        id=item.id,
                        url=item.url,
                        events=item.events,
                        secret=item.secret,
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                row.url, row.events, row.updated_at = item.url, item.events, now
                if item.secret is not None:
                    row.secret = item.secret
        detail = {
            "subscriptions": [{"id": i.id, "url": i.url, "events": i.events} for i in wanted],
            "removed": removed,
            "secrets_set": [i.id for i in wanted if i.secret is not None],
        }
        await audit(session, actor, "subscriptions.put", "subscriptions", detail)
    return await _all(services)


@get("/deliveries", opt=requires("admin"), operation_id="listDeliveries")
async def list_deliveries(
    services: NamedDependency[Services],
    status: Annotated[DeliveryStatus | None, QueryParameter(description="pending, delivered or dead")] = None,
    subscription: Annotated[
        str | None, QueryParameter(description="one subscription's id", max_length=64)
    ] = None,
    before: Annotated[
        str | None, QueryParameter(description="the `next` of the previous page", max_length=36)
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> DeliveriesOut:
    """Newest first."""
    query = select(Delivery)
    if status is not None:
        query = query.where(Delivery.status == status)
    if subscription is not None:
        query = query.where(Delivery.subscription_id == subscription)
    if before is not None:
        query = query.where(Delivery.id < before)
    async with services.sessions() as session:
        rows = list((await session.execute(query.order_by(Delivery.id.desc()).limit(limit + 1))).scalars())
    page = rows[:limit]
    return DeliveriesOut([delivery_out(row) for row in page], page[-1].id if len(rows) > limit else None)


@post(
    "/deliveries/{delivery_id:str}/retry",
    opt={**requires("admin"), **answers(409)},
    operation_id="retryDelivery",
    status_code=200,
)
async def retry_delivery(
    services: NamedDependency[Services], request: Request[Any, Any, Any], delivery_id: FromPath[str]
) -> DeliveryOut:
    """A dead delivery is sent again with a fresh set of attempts; its failed_delivery exception resolves."""
    now = datetime.now(UTC)
    try:
        async with services.sessions() as session, session.begin():
            row = await retry(session, delivery_id, now)
            subscription = await session.get(Subscription, row.subscription_id)
            if subscription is None:
                raise Conflict(
                    f"delivery {delivery_id} belongs to the removed subscription {row.subscription_id!r}",
                    [FieldError("id", "its subscription was removed")],
                )
            await audit(
                session,
                principal_of(request).name,
                "delivery.retry",
                f"delivery:{delivery_id}",
                {"event_id": row.event_id},
            )
    except UnknownDelivery as error:
        raise NotFound(str(error), [FieldError("id", "unknown")]) from None
    except DeliveryStateError as error:
        raise Conflict(str(error), [FieldError("status", f"delivery is {error.status}")]) from None
    dispatcher = services.dispatcher
    if dispatcher is not None:
        dispatcher.wake()
    return delivery_out(row)


router = Router(
    path="/v1",
    route_handlers=[list_subscriptions, put_subscriptions, list_deliveries, retry_delivery],
    tags=["webhooks"],
)
