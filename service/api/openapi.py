"""The OpenAPI document: Litestar writes it from the handlers' declarations; this module supplies the
pieces Litestar does not derive by itself.

- `StructSchemas`, an OpenAPI schema plugin: every type that holds a msgspec Struct (a handler's
  `data: T`, its return annotation, a `ResponseSpec`) is documented with the JSON Schema msgspec derives
  from that type, i.e. exactly what the decoder enforces (bounds, `additionalProperties: false`, extra
  conditions such as `if`/`else`), each Struct once in `components/schemas`.
- `OptionalBody` and `YamlBody`, operation classes (a route's `operation_class=`) for a body that may be
  empty, or that may also be sent as YAML text.
- `answers(409)` and `links(...)`, a route's `opt` entries naming the problem answers only the handler
  knows of and the operations a client can call next with values from the answer (OpenAPI links).
- `document_operations`, run at startup: every operation's problem answers, derived from what guards it
  (roles: 401, 403, 503; parameters: 422; path parameters: 404; a body: 400, 413, 422) plus its declared
  `answers`; `security: []` on operations open to anyone; the declared links; and a check that every
  example body in the document is one the decoder accepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin

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
from litestar.params import Body, BodyKwarg
from litestar.plugins import OpenAPISchemaPlugin
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from service.api.problems import PROBLEM

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

JSON = "application/json"
REF_TEMPLATE = "#/components/schemas/{name}"
_REF_PREFIX = REF_TEMPLATE.removesuffix("{name}")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


def answers(*statuses: int) -> dict[str, frozenset[int]]:
    """The `opt` entry documenting problem answers a handler gives beyond what its roles, parameters and
    body imply, e.g. `opt={**requires("stock"), **answers(409)}` for a handler that refuses a request the
    current state contradicts."""
    unknown = [status for status in statuses if status not in PROBLEMS]
    if unknown:
        raise ValueError(f"no description for the problem status(es) {unknown}")
    return {"answers": frozenset(statuses)}


def links(**targets: Mapping[str, str]) -> dict[str, Mapping[str, Mapping[str, str]]]:
    """The `opt` entry documenting the operations a client can call next with values from this handler's
    success answer: `links(getReservation={"reservation_id": "$response.body#/id"})` (operation id -> its
    parameters as OpenAPI runtime expressions)."""
    return {"links": dict(targets)}


def example(value: Any) -> Any:
    """A body's `Annotated` metadata giving an example body the service accepts (on the demo network),
    shown in the document and sent first by fuzzers (checked against the type at startup)."""
    return Body(examples=[Example(summary="on the demo network", value=value)])


@dataclasses.dataclass
class OptionalBody(Operation):
    """The operation of a handler whose body may be empty (`data: JSONBody[T] = DEFAULT`)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


@dataclasses.dataclass
class YamlBody(Operation):
    """The operation of a handler that also reads its body as YAML text (`from_media` on the type)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            yaml = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
            self.request_body.content["application/yaml"] = yaml


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


def _plain(target: str) -> Reference:
    return Reference(ref=target)


def to_spec(
    schema: Mapping[str, Any] | bool, ref: Callable[[str], Reference] = _plain
) -> Schema | Reference | bool:
    """One JSON Schema object (or boolean schema) as a `Schema` (or `Reference`); `ref` gives the
    reference for a `$ref`."""
    if isinstance(schema, bool):
        return schema
    if "$ref" in schema:
        rest = {key: value for key, value in schema.items() if key not in ("$ref", "description")}
        if not rest:
            reference = ref(schema["$ref"])
            if "description" in schema:
                reference = Reference(ref=reference.ref, description=schema["description"])
            return reference
        # `Annotated[SomeStruct, Meta(extra_json_schema=...)]`: the type's schema and the extra conditions
        combined = to_spec({**rest, "allOf": [*rest.get("allOf", ()), {"$ref": schema["$ref"]}]}, ref)
        assert isinstance(combined, Schema)
        return combined
    attributes: dict[str, Any] = {}
    for key, value in schema.items():
        name = _ATTRIBUTES.get(key)
        if name is None:
            raise ValueError(f"JSON Schema keyword {key!r} has no OpenAPI counterpart")
        if key in _ONE:
            value = to_spec(value, ref)
        elif key in _MANY:
            value = [to_spec(item, ref) for item in value]
        elif key in _BY_NAME:
            value = {k: to_spec(v, ref) for k, v in value.items()}
        elif key == "type":
            value = _type(value)
        elif key == "format":
            value = _format(value)
        attributes[name] = value
    return Schema(**attributes)


def _schema(value: Mapping[str, Any], ref: Callable[[str], Reference]) -> Schema | Reference:
    spec = to_spec(value, ref)
    assert not isinstance(spec, bool)  # msgspec writes objects for types, booleans only inside
    return spec


def holds_struct(annotation: Any) -> bool:
    """Whether a type is, or contains, a msgspec Struct (through lists, unions, Annotated, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return True
    if get_origin(annotation) is Annotated:
        return holds_struct(get_args(annotation)[0])
    return any(holds_struct(arg) for arg in get_args(annotation))


def _named_types(annotation: Any) -> dict[str, type]:
    """The classes msgspec names in `components/schemas` for a type, by the name it gives them."""
    named: dict[str, type] = {}
    seen: set[int] = set()

    def visit(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, msgspec.inspect.Type):
            cls = getattr(node, "cls", None)
            if isinstance(cls, type):
                named[cls.__name__] = cls
            for field in msgspec.structs.fields(node):
                visit(getattr(node, field.name))
        elif isinstance(node, msgspec.inspect.Field):
            visit(node.type)
        elif isinstance(node, tuple):
            for item in node:
                visit(item)

    visit(msgspec.inspect.type_info(annotation))
    return named


class StructSchemas(OpenAPISchemaPlugin):
    """Document every type holding a msgspec Struct with the JSON Schema msgspec derives from it.

    Each named component (a Struct, an enum) goes into Litestar's schema registry, so the document lists
    it once under `components/schemas` and Litestar's references and ours name it alike.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return holds_struct(field_definition.annotation)

    def to_openapi_schema(  # type: ignore[override]  # Litestar's for_plugin takes a reference too
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema | Reference:
        annotation = field_definition.annotation
        (top,), components = msgspec.json.schema_components([annotation], ref_template=REF_TEMPLATE)
        classes = _named_types(annotation)
        registry = schema_creator.schema_registry

        def ref(target: str) -> Reference:
            name = target.removeprefix(_REF_PREFIX)
            named = FieldDefinition.from_annotation(classes[name])
            reference = registry.get_reference_for_field_definition(named)
            if reference is None:
                registered = registry.get_schema_for_field_definition(named)  # before its fields: recursion
                component = _schema(components[name], ref)
                assert isinstance(component, Schema)
                for spec_field in dataclasses.fields(Schema):
                    setattr(registered, spec_field.name, getattr(component, spec_field.name))
                reference = registry.get_reference_for_field_definition(named)
                assert reference is not None
            return reference

        return _schema(top, ref)


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


def _check_examples(where: str, handler: Any) -> None:
    """An example body the decoder would refuse would document a falsehood."""
    data = handler.parsed_fn_signature.parameters.get("data")
    kwarg = data.kwarg_definition if data is not None else None
    if data is not None and isinstance(kwarg, BodyKwarg):
        for example in kwarg.examples or ():
            try:
                msgspec.convert(example.value, data.annotation)
            except msgspec.ValidationError as exc:
                raise ValueError(f"{where}: the example body is refused: {exc}") from None


def _handlers(app: Litestar) -> Iterator[tuple[str, str, Any, Operation]]:
    """(method, path, handler, operation) for every documented operation."""
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = route.path_format or "/"
        item = paths.get(path)
        if item is None:
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, method.lower(), None)
            if isinstance(operation, Operation):
                yield method, path, handler, operation


def document_operations(app: Litestar) -> None:
    """Complete the app's OpenAPI document at startup: every operation's problem answers, the security of
    open operations, the declared links; check the example bodies."""
    document = app.openapi_schema
    if document.components is None:
        document.components = Components()
    schemas = document.components.schemas = dict(document.components.schemas or {})
    schemas.setdefault("Problem", PROBLEM_SCHEMA)
    operation_ids: set[str] = set()
    declared_links: list[tuple[str, Mapping[str, Mapping[str, str]]]] = []
    for method, path, handler, operation in _handlers(app):
        operation_ids.add(operation.operation_id or "")
        _check_examples(f"{method} {path}", handler)
        roles: tuple[str, ...] | None = handler.opt.get("roles")
        if not roles and not path.startswith("/v1/"):
            operation.security = []  # health, metrics: open to anyone
        responses = operation.responses = dict(operation.responses or {})
        responses.pop("400", None)  # Litestar's own shape; ours is the Problem below where it applies
        declared: frozenset[int] = handler.opt.get("answers", frozenset())
        for problem in sorted(problem_statuses(roles, path, operation) | declared):
            responses[str(problem)] = _problem_response(problem)
        targets: Mapping[str, Mapping[str, str]] | None = handler.opt.get("links")
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
