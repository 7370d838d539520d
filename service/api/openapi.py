"""Request bodies in the OpenAPI document for handlers that decode their own body.

Handlers read `request` and decode the bytes with `service.api.body.decode_body` (strict msgspec, no
Litestar `data:` parameter), so Litestar cannot see what they accept. Each such handler names its
body type once, next to the route decorator:

    @post("/decisions/allocation", ...)
    @json_body(AllocationRequest)
    async def allocation(request: Request[Any, Any, Any], ...) -> ...:

`json_body` only records the type (no wrapper, nothing added per request). When the app starts,
`document_operations` gives every recorded operation its `requestBody`, with the JSON Schema that
msgspec derives from the same types (what the decoder enforces), shared in `components/schemas`.
`json_response` likewise documents the answer of a handler that returns a plain dict (the types in
`service.api.responses`).

The same pass documents every problem answer an operation can give, derived from what guards it:
roles (401, 403, 503), parameters (422), path parameters (404), a body (400, 413, 422); a handler
adds what only it knows with `@answers(409)`. Operations open to anyone get `security: []`, and
`@links(...)` names the operations a client can call next with values from an answer (OpenAPI links).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Litestar
from litestar.enums import ParamType
from litestar.openapi.spec import (
    Components,
    Example,
    Link,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.routes import HTTPRoute
from litestar.utils.helpers import unwrap_partial

from service.api.problems import PROBLEM

F = TypeVar("F", bound=Callable[..., Any])
JSON = "application/json"
REF_TEMPLATE = "#/components/schemas/{name}"


@dataclass(frozen=True)
class BodySpec:
    """What one handler accepts: the decoded type as JSON, and any other media types it reads."""

    type: Any
    required: bool = True
    description: str | None = None
    other_media: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    example: Any = None


_BODIES: dict[Callable[..., Any], BodySpec] = {}
_RESPONSES: dict[Callable[..., Any], Any] = {}
_ANSWERS: dict[Callable[..., Any], frozenset[int]] = {}
_LINKS: dict[Callable[..., Any], dict[str, Mapping[str, str]]] = {}


def json_body(
    type_: Any,
    *,
    required: bool = True,
    description: str | None = None,
    other_media: Mapping[str, Any] | None = None,
    example: Any = None,
) -> Callable[[F], F]:
    """Declare the type a handler decodes from its JSON body (put it right under the route decorator).

    `required=False` for a handler that accepts an empty body; `other_media` maps further media
    types the handler reads to their type (`{"application/yaml": str}`); `example` is a body the
    service accepts (on the demo network), shown in the document and sent first by fuzzers.
    """
    if example is not None:
        msgspec.convert(example, type_)  # an example the decoder would refuse would document a falsehood
    spec = BodySpec(type_, required, description, dict(other_media or {}), example)

    def register(fn: F) -> F:
        _BODIES[fn] = spec
        return fn

    return register


def json_response(type_: Any) -> Callable[[F], F]:
    """Document the JSON a handler that returns a plain dict answers with (on its success status)."""

    def register(fn: F) -> F:
        _RESPONSES[fn] = type_
        return fn

    return register


def answers(*statuses: int) -> Callable[[F], F]:
    """Document problem answers a handler gives beyond what its roles, parameters and body imply,
    e.g. `@answers(409)` for a handler that refuses a request the current state contradicts."""
    unknown = [status for status in statuses if status not in PROBLEMS]
    if unknown:
        raise ValueError(f"no description for the problem status(es) {unknown}")

    def register(fn: F) -> F:
        _ANSWERS[fn] = frozenset(statuses)
        return fn

    return register


def links(**targets: Mapping[str, str]) -> Callable[[F], F]:
    """Document the operations a client can call next with values from this handler's success answer:
    `@links(getReservation={"reservation_id": "$response.body#/id"})` (operation id -> its parameters as
    OpenAPI runtime expressions)."""

    def register(fn: F) -> F:
        _LINKS[fn] = dict(targets)
        return fn

    return register


# --- JSON Schema (as msgspec writes it) to Litestar's spec objects -----------------------------------

_ONE = {
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
    "additionalProperties",
}
_MANY = {"allOf", "anyOf", "oneOf", "prefixItems"}
_BY_NAME = {"properties", "patternProperties", "dependentSchemas"}


def _attribute_names() -> dict[str, str]:
    """JSON Schema keyword -> `Schema` attribute (`anyOf` -> `any_of`, `not` -> `schema_not`)."""
    names: dict[str, str] = {}
    for field in dataclasses.fields(Schema):
        alias = field.metadata.get("alias")
        if alias is None:
            head, *rest = field.name.split("_")
            alias = head + "".join(part.title() for part in rest)
        names[alias] = field.name
    return names


_ATTRIBUTES = _attribute_names()


def _format(value: str) -> OpenAPIFormat | str:
    try:
        return OpenAPIFormat(value)
    except ValueError:
        return value


def _type(value: str | list[str]) -> OpenAPIType | list[OpenAPIType]:
    return [OpenAPIType(v) for v in value] if isinstance(value, list) else OpenAPIType(value)


def to_spec(schema: Mapping[str, Any] | bool) -> Schema | Reference | bool:
    """One JSON Schema object (or boolean schema) as a `Schema` (or `Reference`)."""
    if isinstance(schema, bool):
        return schema
    if "$ref" in schema:
        reference = Reference(ref=schema["$ref"], description=schema.get("description"))
        rest = {key: value for key, value in schema.items() if key not in ("$ref", "description")}
        if not rest:
            return reference
        # `Annotated[SomeStruct, Meta(extra_json_schema=...)]`: the type's schema and the extra conditions
        combined = to_spec({**rest, "allOf": [*rest.get("allOf", ()), {"$ref": schema["$ref"]}]})
        assert isinstance(combined, Schema)
        return combined
    attributes: dict[str, Any] = {}
    for key, value in schema.items():
        name = _ATTRIBUTES.get(key)
        if name is None:
            raise ValueError(f"JSON Schema keyword {key!r} has no OpenAPI counterpart")
        if key in _ONE:
            value = to_spec(value)
        elif key in _MANY:
            value = [to_spec(item) for item in value]
        elif key in _BY_NAME:
            value = {k: to_spec(v) for k, v in value.items()}
        elif key == "type":
            value = _type(value)
        elif key == "format":
            value = _format(value)
        attributes[name] = value
    return Schema(**attributes)


def _schema(value: Mapping[str, Any]) -> Schema | Reference:
    spec = to_spec(value)
    assert not isinstance(spec, bool)  # msgspec writes objects for types, booleans only inside
    return spec


# --- the document -------------------------------------------------------------------------------------

PROBLEM_SCHEMA = Schema(
    title="Problem",
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details; `errors` names each failing field by its JSON path.",
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "instance": Schema(type=OpenAPIType.STRING),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.OBJECT,
                properties={
                    "field": Schema(type=OpenAPIType.STRING, description="e.g. `lines[2].qty`"),
                    "reason": Schema(type=OpenAPIType.STRING),
                },
                required=["field", "reason"],
            ),
        ),
    },
    required=["type", "title", "status", "detail"],
    examples=[
        {
            "type": "about:blank",
            "title": "Invalid request",
            "status": 422,
            "detail": "lines[0].qty: Expected `int` >= 1",
            "instance": "/v1/reservations",
            "errors": [{"field": "lines[0].qty", "reason": "Expected int >= 1"}],
        }
    ],
)
PROBLEMS = {
    400: "The body is empty, is not JSON, or nests arrays and objects deeper than 64 levels.",
    401: "No API key was sent, or the key is unknown or revoked.",
    403: "The API key has none of the roles this operation accepts.",
    404: "What the path (or a parameter) names does not exist.",
    409: "The request contradicts the current state; `detail` and `errors` say how.",
    413: "The body is larger than the service accepts (`MAX_BODY_BYTES`).",
    415: "The body's content type is not one this operation reads.",
    422: "A parameter or a value in the body does not have the documented type or bounds, or is not "
    "acceptable (`errors` names it).",
    503: "Redis or the database cannot be reached, or a component is not running; nothing was changed. "
    "Retry after `Retry-After` seconds.",
}
_PROBLEM_HEADERS = {
    401: {"WWW-Authenticate": "how to authenticate: `Bearer`"},
    503: {"Retry-After": "seconds to wait before retrying"},
}


@dataclass
class _Documented:
    operation: Operation
    status: int
    body: BodySpec | None
    response: Any


def _operations(app: Litestar) -> list[_Documented]:
    """Every documented operation whose handler declared a body or a response type."""
    paths = app.openapi_schema.paths or {}
    found: list[_Documented] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = paths.get(route.path_format or "/")
        if item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            fn = unwrap_partial(handler.fn)
            spec, response = _BODIES.get(fn), _RESPONSES.get(fn)
            operation = getattr(item, method.lower(), None)
            if (spec is not None or response is not None) and isinstance(operation, Operation):
                found.append(_Documented(operation, handler.status_code, spec, response))
    return found


def _merge(schemas: dict[str, Schema], name: str, schema: Schema) -> None:
    """Add a component; one of the same name that Litestar wrote for a response must be the same type."""
    existing = schemas.get(name)
    if existing is not None and set(existing.properties or ()) != set(schema.properties or ()):
        raise ValueError(f"two different types are both named {name!r} in the OpenAPI components")
    schemas[name] = schema  # msgspec's schema is what the decoder enforces


def _request_bodies(app: Litestar) -> None:
    """Attach the declared request bodies (and dict answers) to the app's OpenAPI document."""
    operations = _operations(app)
    if not operations:
        return
    types: list[Any] = []
    for documented in operations:
        if documented.body is not None:
            types.append(documented.body.type)
            types.extend(documented.body.other_media.values())
        if documented.response is not None:
            types.append(documented.response)
    refs, components = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    schemas = _schemas(app)
    for name, component in sorted(components.items()):
        converted = _schema(component)
        assert isinstance(converted, Schema)
        _merge(schemas, name, converted)
    position = iter(refs)
    for documented in operations:
        operation, spec = documented.operation, documented.body
        responses = operation.responses = dict(operation.responses or {})
        if spec is not None:
            content = {JSON: OpenAPIMediaType(schema=_schema(next(position)))}
            if spec.example is not None:
                content[JSON].examples = {
                    "example": Example(summary="on the demo network", value=spec.example)
                }
            for media in spec.other_media:
                content[media] = OpenAPIMediaType(schema=_schema(next(position)))
            operation.request_body = RequestBody(
                content=content, required=spec.required, description=spec.description
            )
        if documented.response is not None:
            status = str(documented.status)
            existing = responses.get(status)
            description = existing.description if isinstance(existing, OpenAPIResponse) else "Success"
            responses[status] = OpenAPIResponse(
                description=description, content={JSON: OpenAPIMediaType(schema=_schema(next(position)))}
            )


def _schemas(app: Litestar) -> dict[str, Schema]:
    document = app.openapi_schema
    if document.components is None:
        document.components = Components()
    schemas = document.components.schemas = dict(document.components.schemas or {})
    return schemas


def problem_statuses(roles: tuple[str, ...] | None, path: str, operation: Operation) -> set[int]:
    """The problem answers an operation's guard, parameters and body imply."""
    statuses: set[int] = set()
    if roles:
        statuses |= {401, 403, 503}  # the key is looked up in the database
    elif path.startswith("/v1/"):
        statuses.add(403)  # a /v1 operation that declares no role is closed to every key
    parameters = [p for p in operation.parameters or () if not isinstance(p, Reference)]
    if parameters:
        statuses.add(422)
    if any(p.param_in == ParamType.PATH for p in parameters):
        statuses.add(404)
    if operation.request_body is not None:
        statuses |= {400, 413, 422}
    return statuses


def _problem_response(status: int) -> OpenAPIResponse:
    headers: dict[str, OpenAPIHeader | Reference] = {
        name: OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description=description)
        for name, description in _PROBLEM_HEADERS.get(status, {}).items()
    }
    return OpenAPIResponse(
        description=PROBLEMS[status],
        headers=headers or None,
        content={PROBLEM: OpenAPIMediaType(schema=Reference(ref=REF_TEMPLATE.format(name="Problem")))},
    )


def _link(operation_id: str, parameters: Mapping[str, str]) -> Link:
    return Link(operation_id=operation_id, parameters=dict(parameters))


def _answers(app: Litestar) -> None:
    """Every operation's problem answers, its security, and the links from its success answers."""
    paths = app.openapi_schema.paths or {}
    operation_ids: set[str] = set()
    declared_links: list[tuple[str, dict[str, Mapping[str, str]]]] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = route.path_format or "/"
        item = paths.get(path)
        if item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, method.lower(), None)
            if not isinstance(operation, Operation):
                continue
            operation_ids.add(operation.operation_id or "")
            fn = unwrap_partial(handler.fn)
            roles: tuple[str, ...] | None = handler.opt.get("roles")
            if not roles and not path.startswith("/v1/"):
                operation.security = []  # health, metrics: open to anyone
            responses = operation.responses = dict(operation.responses or {})
            responses.pop("400", None)  # Litestar's own shape; ours is the Problem below where it applies
            for problem in sorted(problem_statuses(roles, path, operation) | _ANSWERS.get(fn, frozenset())):
                responses[str(problem)] = _problem_response(problem)
            targets = _LINKS.get(fn)
            if targets:
                declared_links.append((f"{method} {path}", targets))
                for status, response in responses.items():
                    if status.startswith("2") and isinstance(response, OpenAPIResponse):
                        response.links = {
                            target: _link(target, parameters) for target, parameters in targets.items()
                        }
    for where, targets in declared_links:
        unknown = sorted(set(targets) - operation_ids)
        if unknown:
            raise ValueError(f"{where} links to operations that do not exist: {unknown}")


def document_operations(app: Litestar) -> None:
    """Complete the app's OpenAPI document at startup: request bodies, dict answers, problem answers,
    security of open operations, links."""
    _request_bodies(app)
    _schemas(app).setdefault("Problem", PROBLEM_SCHEMA)
    _answers(app)
