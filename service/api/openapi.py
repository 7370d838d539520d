"""Request bodies in the OpenAPI document for handlers that decode their own body.

Handlers read `request` and decode the bytes with `service.api.body.decode_body` (strict msgspec, no
Litestar `data:` parameter), so Litestar cannot see what they accept. Each such handler names its
body type once, next to the route decorator:

    @post("/decisions/allocation", ...)
    @json_body(AllocationRequest)
    async def allocation(request: Request[Any, Any, Any], ...) -> ...:

`json_body` only records the type (no wrapper, nothing added per request). When the app starts,
`document_request_bodies` gives every recorded operation its `requestBody`, with the JSON Schema that
msgspec derives from the same types (what the decoder enforces), shared in `components/schemas`,
and the 400/422 problem answers a bad body gets. `json_response` likewise documents the answer of a
handler that returns a plain dict (the types in `service.api.responses`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Litestar
from litestar.openapi.spec import (
    Components,
    OpenAPIFormat,
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


_BODIES: dict[Callable[..., Any], BodySpec] = {}
_RESPONSES: dict[Callable[..., Any], Any] = {}


def json_body(
    type_: Any,
    *,
    required: bool = True,
    description: str | None = None,
    other_media: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Declare the type a handler decodes from its JSON body (put it right under the route decorator).

    `required=False` for a handler that accepts an empty body; `other_media` maps further media
    types the handler reads to their type (`{"application/yaml": str}`).
    """
    spec = BodySpec(type_, required, description, dict(other_media or {}))

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
        return Reference(ref=schema["$ref"], description=schema.get("description"))
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
)
BAD_BODY = {
    "400": "The body is empty or not JSON.",
    "422": "A value in the body does not have the documented type or bounds (`errors` names it).",
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


def document_request_bodies(app: Litestar) -> None:
    """Attach the declared request bodies (and dict answers) to the app's OpenAPI document, at startup."""
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
    document = app.openapi_schema
    if document.components is None:
        document.components = Components()
    schemas = document.components.schemas = dict(document.components.schemas or {})
    for name, component in sorted(components.items()):
        converted = _schema(component)
        assert isinstance(converted, Schema)
        _merge(schemas, name, converted)
    problem = Reference(ref=REF_TEMPLATE.format(name="Problem"))
    position = iter(refs)
    for documented in operations:
        operation, spec = documented.operation, documented.body
        responses = operation.responses = dict(operation.responses or {})
        if spec is not None:
            schemas.setdefault("Problem", PROBLEM_SCHEMA)
            content = {JSON: OpenAPIMediaType(schema=_schema(next(position)))}
            for media in spec.other_media:
                content[media] = OpenAPIMediaType(schema=_schema(next(position)))
            operation.request_body = RequestBody(
                content=content, required=spec.required, description=spec.description
            )
            for status, description in BAD_BODY.items():
                responses[status] = OpenAPIResponse(
                    description=description, content={PROBLEM: OpenAPIMediaType(schema=problem)}
                )
        if documented.response is not None:
            status = str(documented.status)
            existing = responses.get(status)
            description = existing.description if isinstance(existing, OpenAPIResponse) else "Success"
            responses[status] = OpenAPIResponse(
                description=description, content={JSON: OpenAPIMediaType(schema=_schema(next(position)))}
            )
