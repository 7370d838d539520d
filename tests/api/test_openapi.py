"""The OpenAPI document describes the bodies the handlers really decode.

Litestar writes the document from each handler's `data: T` (which the app's request class decodes
strictly); these tests check the document against the running service: every documented body resolves and matches the decoded type's fields, the service rejects an
empty instance of the documented type by naming a required field of that type (so the documented type is
the decoded one), and no operation without a documented body reads one.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
import pytest
from jsonschema import Draft202012Validator, ValidationError
from litestar import Litestar, Request, post
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient
from openapi_spec_validator import validate

from service.api.body import StrictRequest, decode
from service.api.openapi import StructSchemas, answers, document_operations, example, links
from service.api.problems import exception_handlers
from tests.api.decisions_fixtures import decisions_api
from tests.apiclient import ApiClient

BODY_METHODS = ("post", "put", "patch", "delete")


async def _document(api: ApiClient) -> dict[str, Any]:
    response = await api.http.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The component a schema names, also through `allOf: [ref]` with extra conditions beside it."""
    while "$ref" in schema or ("type" not in schema and len(schema.get("allOf", ())) == 1):
        if "$ref" not in schema:
            schema = schema["allOf"][0]
            continue
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = document["components"]["schemas"][name]
    return schema


def _bodies(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, path) -> the JSON request body schema of every operation that documents one."""
    found = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body is not None:
                found[(method, path)] = body
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_the_document_is_valid_openapi_31_and_every_reference_resolves(sqlite_api: ApiClient) -> None:
    document = await _document(sqlite_api)
    validate(document)
    components = document["components"]["schemas"]
    missing = {ref for ref in _refs(document) if ref.removeprefix("#/components/schemas/") not in components}
    assert not missing, f"references without a component: {sorted(missing)}"
    assert all(ref.startswith("#/components/schemas/") for ref in _refs(document))


async def test_every_body_is_required_json_except_the_optional_ones(sqlite_api: ApiClient) -> None:
    bodies = _bodies(await _document(sqlite_api))
    assert len(bodies) == 26
    optional = {
        "/v1/rulesets/{name}/rollback",
        "/v1/keys/{name_or_id}/rotate",
        "/v1/exceptions/{exception_id}/acknowledge",
        "/v1/exceptions/{exception_id}/resolve",
        "/v1/approvals/{case_id}/approve",
    }
    for (method, path), body in bodies.items():
        assert "application/json" in body["content"], f"{method} {path}"
        expected = path not in optional
        assert body["required"] is expected, f"{method} {path}"
    yaml = bodies[("post", "/v1/rulesets/{name}/versions")]["content"]["application/yaml"]
    assert yaml["schema"] == {"type": "string"}


EXPECTED = {
    # (method, path): (is a list, some documented fields, exactly the required fields)
    ("post", "/v1/decisions/allocation"): (
        False,
        {"order_id", "channel", "fulfillment", "lines", "destination", "reserve", "idempotency_key"},
        {"order_id", "channel", "fulfillment", "lines"},
    ),
    ("post", "/v1/reservations"): (
        False,
        {"order_id", "channel", "idempotency_key", "lines", "ttl_seconds", "allow_partial"},
        {"order_id", "channel", "idempotency_key", "lines"},
    ),
    ("put", "/v1/stock"): (
        True,
        {"sku", "location", "sellable", "damaged", "return_pending", "in_transit"},
        {"sku", "location", "sellable"},
    ),
    ("post", "/v1/stock/events"): (True, {"event_id", "type", "qty", "to_location"}, None),
    ("put", "/v1/locations"): (True, {"id", "type", "region", "lat", "lon", "capabilities"}, None),
    ("put", "/v1/items"): (True, {"sku", "category", "price", "cost"}, {"sku", "category", "price", "cost"}),
    ("post", "/v1/rulesets/{name}/evaluate"): (False, {"facts", "trace"}, {"facts"}),
    ("post", "/v1/rulesets/{name}/rollback"): (False, {"version"}, set()),
    ("post", "/v1/simulations"): (False, set(), None),
    ("post", "/v1/keys"): (False, {"name", "roles", "expires_at"}, {"name", "roles"}),
    ("post", "/v1/keys/{name_or_id}/rotate"): (False, {"expires_at"}, set()),
    ("post", "/v1/transfers"): (False, {"transfer_id", "sku", "qty", "from_location", "to_location"}, None),
    ("post", "/v1/markdowns"): (False, {"markdown_id", "sku", "proposed_price", "effective_from"}, None),
    ("post", "/v1/approvals/{case_id}/approve"): (False, {"comment"}, set()),
    ("post", "/v1/approvals/{case_id}/reject"): (False, {"comment"}, {"comment"}),
}


async def test_documented_bodies_list_the_decoded_types_fields(sqlite_api: ApiClient) -> None:
    document = await _document(sqlite_api)
    bodies = _bodies(document)
    for key, (is_list, fields, required) in EXPECTED.items():
        schema = _resolve(document, bodies[key]["content"]["application/json"]["schema"])
        if is_list:
            assert schema["type"] == "array", key
            schema = _resolve(document, schema["items"])
        assert schema["type"] == "object", key
        assert fields <= set(schema["properties"]), (key, sorted(schema["properties"]))
        assert set(schema.get("required", ())) <= set(schema["properties"]), key
        if required is not None:
            assert set(schema.get("required", ())) == required, key
        assert schema["additionalProperties"] is False, key  # the decoders reject unknown fields
    lines = _resolve(document, bodies[("post", "/v1/decisions/allocation")]["content"]["application/json"])
    lines = _resolve(document, lines["schema"])["properties"]["lines"]
    assert lines["minItems"] == 1 and set(_resolve(document, lines["items"])["properties"]) >= {"sku", "qty"}


def _empty_instance(document: dict[str, Any], schema: dict[str, Any]) -> tuple[Any, str]:
    """The smallest body of the documented shape, and the field the decoder must name rejecting it."""
    schema = _resolve(document, schema)
    prefix = ""
    body: Any = {}
    if schema.get("type") == "array":
        schema, prefix, body = _resolve(document, schema["items"]), "[0].", [{}]
    required = schema.get("required") or []
    if required:
        return body, prefix + required[0]
    if isinstance(body, list):
        return [{"not_a_documented_field": 1}], prefix + "not_a_documented_field"
    return {"not_a_documented_field": 1}, "not_a_documented_field"


async def test_the_service_decodes_the_documented_type(sqlite_api: ApiClient) -> None:
    """Send `{}` (or `[{}]`): the handler's decoder names the first required field of the documented type."""
    document = await _document(sqlite_api)
    for (method, path), body in _bodies(document).items():
        instance, field = _empty_instance(document, body["content"]["application/json"]["schema"])
        response = await sqlite_api.http.request(
            method.upper(), _concrete(path), json=instance, headers=sqlite_api.headers("admin")
        )
        assert response.status_code == 422, (method, path, response.status_code, response.text)
        named = [error["field"] for error in response.json()["errors"]]
        assert named == [field], (method, path, named)


async def _undocumented_body_readers(
    client: AsyncTestClient[Any], document: dict[str, Any], headers: dict[str, str]
) -> list[str]:
    """Operations without a documented body that answer broken JSON by complaining about the body."""
    readers = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in BODY_METHODS or "requestBody" in operation:
                continue
            response = await client.request(
                method.upper(),
                _concrete(path),
                content=b'{"broken',
                headers={**headers, "content-type": "application/json"},
            )
            if response.status_code in (400, 422) and any(
                error.get("field") == "body" for error in response.json().get("errors", [])
            ):
                readers.append(f"{method.upper()} {path}")
    return readers


async def test_no_operation_reads_a_body_it_does_not_document(sqlite_api: ApiClient) -> None:
    document = await _document(sqlite_api)
    undocumented = [
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in BODY_METHODS and "requestBody" not in item[method]
    ]
    assert ("post", "/v1/reservations/{reservation_id}/commit") in undocumented  # the check runs on some
    readers = await _undocumented_body_readers(sqlite_api.http, document, sqlite_api.headers("admin"))
    assert readers == [], f"decode a body the OpenAPI document does not describe: {readers}"


class _Thing(msgspec.Struct, forbid_unknown_fields=True):
    name: str


@post("/documented", status_code=200)
async def _documented(data: JSONBody[_Thing]) -> str:
    return data.name


@post("/undocumented", status_code=200)
async def _undocumented(request: Request[Any, Any, Any]) -> str:
    return decode(await request.body(), _Thing).name  # read past the declaration: the check must find it


async def test_the_check_finds_a_handler_that_decodes_an_undocumented_body() -> None:
    app = Litestar(
        [_documented, _undocumented],
        on_startup=[document_operations],
        exception_handlers=exception_handlers(),
        request_class=StrictRequest,
        plugins=[StructSchemas()],
    )
    async with AsyncTestClient(app=app) as client:
        document = (await client.get("/schema/openapi.json")).json()
        assert "requestBody" in document["paths"]["/documented"]["post"]
        assert "requestBody" not in document["paths"]["/undocumented"]["post"]
        assert await _undocumented_body_readers(client, document, {}) == ["POST /undocumented"]


def _check(document: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    """Validate `value` against a schema of the document (its `#/components/...` references resolve)."""
    root = {**schema, "components": document["components"]}
    Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(value)


async def test_decision_answers_have_the_documented_shape(sqlite_url: str) -> None:
    async with decisions_api(sqlite_url) as dapi:
        document = await _document(dapi.client)
        decide = document["paths"]["/v1/decisions/allocation"]["post"]["responses"]["200"]
        logged = document["paths"]["/v1/decisions/{decision_id}"]["get"]["responses"]["200"]
        body = {
            "order_id": "O-1",
            "channel": "web",
            "fulfillment": "ship",
            "lines": [{"sku": "TEE-001", "qty": 1}],
        }
        body["destination"] = {"lat": 53.48, "lon": -2.24}
        answer = await dapi.post("allocation", body)
        assert answer.status_code == 200, answer.text
        _check(document, decide["content"]["application/json"]["schema"], answer.json())
        read = await dapi.client.as_("decide").get(f"/v1/decisions/{answer.json()['decision_id']}")
        assert read.status_code == 200, read.text
        _check(document, logged["content"]["application/json"]["schema"], read.json())
        with pytest.raises(ValidationError):  # the check can fail: an answer without its ruleset
            _check(
                document, decide["content"]["application/json"]["schema"], {**answer.json(), "ruleset": None}
            )


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


async def test_every_v1_operation_documents_its_problem_answers(sqlite_api: ApiClient) -> None:
    """401, 403, 503 on every /v1 operation; 422 with parameters or a body; 404 with a path parameter;
    400 and 413 with a body; each one application/problem+json with the shared Problem schema."""
    document = await _document(sqlite_api)
    v1 = [(method, path, op) for method, path, op in _operations(document) if path.startswith("/v1/")]
    assert len(v1) >= 37
    for method, path, operation in v1:
        responses = operation["responses"]
        expected = {"401", "403", "503"}
        if operation.get("parameters") or "requestBody" in operation:
            expected.add("422")
        if any(parameter["in"] == "path" for parameter in operation.get("parameters", ())):
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"400", "413"}
        assert expected <= set(responses), (method, path, sorted(expected - set(responses)))
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}, (
                    method,
                    path,
                    status,
                )
    assert set(document["components"]["schemas"]["Problem"]["required"]) == {
        "type",
        "title",
        "status",
        "detail",
    }


async def test_state_conflicts_are_documented_where_they_happen(sqlite_api: ApiClient) -> None:
    document = await _document(sqlite_api)
    conflicts = {op["operationId"] for _, _, op in _operations(document) if "409" in op["responses"]}
    assert {
        "createReservation",
        "commitReservation",
        "releaseReservation",
        "publishRulesetVersion",
        "rollbackRuleset",
        "diffRulesetVersion",
        "getSimulationReport",
        "decideAllocation",
    } <= conflicts
    capacity = document["paths"]["/v1/capacity"]["get"]["responses"]
    assert {"200", "404", "422"} <= set(capacity)


async def test_open_operations_are_marked_open_and_answer_without_a_key(sqlite_api: ApiClient) -> None:
    document = await _document(sqlite_api)
    assert document["security"] == [{"apiKey": []}, {"apiKeyHeader": []}]  # Bearer or X-API-Key
    for method, path, operation in _operations(document):
        if path.startswith("/v1/"):
            assert "security" not in operation, (method, path)  # the document's default: a key
            continue
        assert operation["security"] == [], (method, path)
        assert "401" not in operation["responses"], (method, path)
        answer = await sqlite_api.http.request(method.upper(), path)
        assert answer.status_code == 200, (method, path, answer.status_code)
    ready = document["paths"]["/health/ready"]["get"]["responses"]
    assert set(ready) == {"200", "503"}


async def test_metrics_are_documented_and_answered_as_text(sqlite_api: ApiClient) -> None:
    document = await _document(sqlite_api)
    ok = document["paths"]["/metrics"]["get"]["responses"]["200"]
    assert set(ok["content"]) == {"text/plain"}
    answer = await sqlite_api.http.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")


async def test_dates_days_and_quantities_are_documented_as_the_service_accepts_them(
    sqlite_api: ApiClient,
) -> None:
    document = await _document(sqlite_api)
    schemas = document["components"]["schemas"]
    promotion = schemas["PromotionIn"]["properties"]
    assert promotion["start"]["format"] == promotion["end"]["format"] == "date-time"
    (day,) = [p for p in document["paths"]["/v1/capacity"]["get"]["parameters"] if p["name"] == "day"]
    assert day["schema"]["pattern"] == r"^\d{4}-\d{2}-\d{2}$"
    events = document["paths"]["/v1/stock/events"]["post"]["requestBody"]["content"]["application/json"]
    item = events["schema"]["items"]
    assert schemas["EventIn"]["properties"]["qty"]["minimum"] == 0
    assert item["if"] == {"properties": {"type": {"const": "adjustment"}}}
    assert item["else"] == {"properties": {"qty": {"minimum": 1}}}
    # the service accepts exactly that: a count of 0, no sale of 0
    stock = sqlite_api.as_("stock")
    event = {"event_id": "E-1", "type": "adjustment", "sku": "A", "location": "S1", "qty": 0}
    assert (await stock.post("/v1/stock/events", json=[event])).status_code == 200
    sale = await stock.post("/v1/stock/events", json=[{**event, "event_id": "E-2", "type": "sale"}])
    assert sale.status_code == 422
    assert [error["field"] for error in sale.json()["errors"]] == ["[0].qty"]
    with pytest.raises(ValidationError):  # the documented schema refuses the sale of 0 too
        _check(document, events["schema"], [{**event, "type": "sale"}])
    _check(document, events["schema"], [event])


def _parameter_names(operation: dict[str, Any]) -> set[str]:
    return {parameter["name"] for parameter in operation.get("parameters", ())}


async def test_links_name_existing_operations_and_their_parameters(sqlite_api: ApiClient) -> None:
    document = await _document(sqlite_api)
    by_id = {op["operationId"]: op for _, _, op in _operations(document)}
    linked: dict[str, set[str]] = {}
    for _, _, operation in _operations(document):
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                target = by_id[link["operationId"]]
                assert set(link["parameters"]) <= _parameter_names(target), (operation["operationId"], name)
                assert status.startswith("2")
                linked.setdefault(operation["operationId"], set()).add(link["operationId"])
    assert linked["createReservation"] == {"getReservation", "commitReservation", "releaseReservation"}
    assert {"getRulesetVersion", "publishRulesetVersion", "evaluateRulesetVersion"} <= linked[
        "createRulesetVersion"
    ]
    assert linked["startSimulation"] == {"getSimulation", "getSimulationReport"}
    assert linked["decideAllocation"] == {"getDecision"}


def _runtime_value(expression: str, request_path: dict[str, str], answer: dict[str, Any]) -> Any:
    """The value of an OpenAPI runtime expression (the two forms the document uses)."""
    if expression.startswith("$request.path."):
        return request_path[expression.removeprefix("$request.path.")]
    pointer = expression.removeprefix("$response.body#/")
    value: Any = answer
    for part in pointer.split("/"):
        value = value[part]
    return value


async def test_following_the_reservation_links_reaches_the_created_reservation(sqlite_api: ApiClient) -> None:
    document = await _document(sqlite_api)
    stock = sqlite_api.as_("stock")
    await stock.put("/v1/items", json=[{"sku": "A", "category": "c", "price": 2.0, "cost": 1.0}])
    await stock.put("/v1/stock", json=[{"sku": "A", "location": "S1", "sellable": 5}])
    created = await sqlite_api.as_("decide").post(
        "/v1/reservations",
        json={
            "order_id": "O-1",
            "channel": "web",
            "idempotency_key": "k-1",
            "lines": [{"sku": "A", "location": "S1", "qty": 1}],
        },
    )
    assert created.status_code == 201, created.text
    paths = {op["operationId"]: (method, path) for method, path, op in _operations(document)}
    links = document["paths"]["/v1/reservations"]["post"]["responses"]["201"]["links"]
    for name in ("getReservation", "commitReservation"):  # commit last: it ends the reservation's hold
        method, template = paths[links[name]["operationId"]]
        url = template
        for parameter, expression in links[name]["parameters"].items():
            url = url.replace(f"{{{parameter}}}", str(_runtime_value(expression, {}, created.json())))
        followed = await sqlite_api.http.request(method.upper(), url, headers=sqlite_api.headers("decide"))
        assert followed.status_code == 200, (name, followed.text)
        assert followed.json()["id"] == created.json()["id"]


@post(
    "/v1/things",
    status_code=201,
    opt={"roles": ("stock",), **links(getNothing={"thing_id": "$response.body#/id"})},
)
async def _linked_to_nothing() -> dict[str, str]:
    return {"id": "t-1"}


def test_a_link_to_an_operation_that_does_not_exist_is_refused_when_the_document_is_built() -> None:
    app = Litestar([_linked_to_nothing])
    with pytest.raises(ValueError, match="getNothing"):
        document_operations(app)  # what the app runs at startup


def test_a_problem_status_without_a_description_cannot_be_declared() -> None:
    with pytest.raises(ValueError, match="418"):
        answers(418)


@post("/v1/things/named", status_code=200, opt={"roles": ("stock",)})
async def _refused_example(data: Annotated[_Thing, example({"name": 1})]) -> str:
    return data.name


def test_an_example_body_the_decoder_refuses_is_refused_when_the_document_is_built() -> None:
    app = Litestar([_refused_example], plugins=[StructSchemas()])
    with pytest.raises(ValueError, match="example body is refused"):
        document_operations(app)
