"""Stripe's official OpenAPI spec (``stripe-spec3-subset.json``, API version
2020-08-27) as the fake server and the plugin's tooling use it.

- :func:`load_spec` and :func:`openapi` read and parse the 1 MB spec once per
  process.
- :func:`decode_form` reads Stripe's bracket form encoding
  (``metadata[k]=v``, ``items[0][price]=p``, ``expand[]=x``).
- :class:`RequestChecker` validates a request with openapi-core and answers
  the way Stripe does (``parameter_unknown``, ``parameter_missing``,
  ``parameter_invalid_integer``, ...), returning the typed parameters.
- :func:`blank` builds an object of a spec schema with every field Stripe
  returns, for the fake's responses.
- :func:`field_table` derives the plugin's ``fields.json`` from the spec.

The spec is looked up at ``$STRIPE_OPENAPI_SPEC``, else at
:data:`DEFAULT_SPEC_PATH`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Stripe's official spec (stripe/openapi ``spec3.json``, MIT licence) cut down to the
#: paths the plugin uses, shipped with the package.
DEFAULT_SPEC_PATH = Path(__file__).parent / "openapi" / "stripe-spec3-subset.json"
FORM = "application/x-www-form-urlencoded"

_lock = threading.Lock()
_cache: dict[str, Any] = {}


def spec_path() -> Path:
    path = Path(os.environ.get("STRIPE_OPENAPI_SPEC") or DEFAULT_SPEC_PATH)
    if not path.is_file():
        raise FileNotFoundError(
            f"Stripe's OpenAPI spec is not at {path}: set STRIPE_OPENAPI_SPEC to stripe-spec3-subset.json"
        )
    return path


def load_spec() -> dict[str, Any]:
    """The spec as a dict, read once per process. Callers must not mutate it."""
    with _lock:
        if "spec" not in _cache:
            _cache["spec"] = json.loads(spec_path().read_text())
        return _cache["spec"]


def openapi():  # noqa: ANN201 - openapi_core.OpenAPI, imported lazily
    """An ``openapi_core.OpenAPI`` for the spec that reads Stripe's nested
    brackets (openapi-core's own ``deepObject`` handles one level only) and
    refuses unknown nested parameters as Stripe does. Built once per process."""
    spec = load_spec()
    with _lock:
        if "openapi" not in _cache:
            from openapi_core import Config, OpenAPI
            from openapi_core.casting.schemas import oas30_write_schema_casters_factory
            from openapi_core.deserializing.styles import StyleDeserializersFactory, style_deserializers

            styles = StyleDeserializersFactory(
                oas30_write_schema_casters_factory,
                style_deserializers={**style_deserializers, "deepObject": _deep_object},
            )
            config = Config(style_deserializers_factory=styles, additional_properties_default_policy="forbid")
            _cache["openapi"] = OpenAPI.from_dict(_nullable_any_of(copy.deepcopy(spec)), config=config)
        return _cache["openapi"]


def _nullable_any_of(node: Any) -> Any:
    """Let nullable ``anyOf`` and ``enum`` schemas accept ``null``, as Stripe's
    answers need: openapi-core's OAS 3.0 validator ignores ``nullable`` next to
    ``anyOf`` and checks ``enum`` without it."""
    if isinstance(node, dict):
        for value in node.values():
            _nullable_any_of(value)
        if node.get("nullable") and "anyOf" in node:
            node["anyOf"].append({"type": "object", "nullable": True, "enum": [None]})
        if node.get("nullable") and None not in node.get("enum", [None]):
            node["enum"].append(None)
    elif isinstance(node, list):
        for value in node:
            _nullable_any_of(value)
    return node


# ---------------------------------------------------------------- form encoding


def decode_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest Stripe's bracket keys: ``a[b][0][c]=v`` -> ``{"a": {"b": [{"c": "v"}]}}``.

    Objects whose keys are ``0..n-1`` become lists, as do ``a[]=x`` repeats.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *(rest[:-1].split("][") if rest.endswith("]") else ([rest] if rest else []))]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        if last == "":
            node.setdefault("", []).append(value)
        else:
            node[last] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if set(node) == {""}:
        return [_listify(v) for v in node[""]]
    if node and all(k.isdigit() for k in node) and sorted(map(int, node)) == list(range(len(node))):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}


def _deep_object(explode: bool, name: str, schema_type: str, location: Any) -> Any:
    prefix = name + "["
    pairs = [(k, v) for k, v in _items(location) if k.startswith(prefix)]
    if not pairs:
        if name in location:
            return location[name]
        raise KeyError(name)
    return decode_form(pairs)[name]


def _items(location: Any) -> Iterable[tuple[str, Any]]:
    return location.items(multi=True) if hasattr(location, "getlist") else location.items()


# ---------------------------------------------------------------- request checks


@dataclass
class Route:
    """One operation of the spec, with the parameter names it accepts."""

    method: str
    template: str
    pattern: re.Pattern[str]
    query: dict[str, bool] = field(default_factory=dict)
    body: dict[str, bool] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return self.template.split("/")[2]


def routes() -> list[Route]:
    """Every operation of the spec, literal paths before templated ones."""
    spec = load_spec()
    with _lock:
        if "routes" not in _cache:
            found = []
            for template, item in spec["paths"].items():
                regex = re.sub(r"\\{[^}]+\\}", r"([^/]+)", re.escape(template))
                for method, operation in item.items():
                    route = Route(method.upper(), template, re.compile(f"^{regex}$"))
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] == "query":
                            route.query[parameter["name"]] = parameter.get("style") == "deepObject"
                    media = operation.get("requestBody", {}).get("content", {}).get(FORM, {})
                    encoding = media.get("encoding", {})
                    for name in media.get("schema", {}).get("properties", {}):
                        route.body[name] = encoding.get(name, {}).get("style") == "deepObject"
                    found.append(route)
            found.sort(key=lambda r: r.template.count("{"))
            _cache["routes"] = found
        return _cache["routes"]


def find_route(method: str, path: str) -> tuple[Route, tuple[str, ...]] | None:
    for route in routes():
        if route.method == method:
            match = route.pattern.match(path)
            if match:
                return route, match.groups()
    return None


class StripeError(Exception):
    """A Stripe error answer: ``status`` and the ``error`` object."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.error = {"type": type, "message": message, **extra}
        if code:
            self.error["code"] = code
            self.error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            self.error["param"] = param

    def body(self) -> dict[str, Any]:
        return {"error": self.error}


class RequestChecker:
    """Validates requests against the spec with openapi-core."""

    def __init__(self) -> None:
        self.api = openapi()

    def check(self, route: Route, path: str, query: list[tuple[str, str]], body: list[tuple[str, str]],
              raw_body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Validate one request; return its typed ``(query, body)`` parameters.

        :raises StripeError: a 400 as Stripe words it.
        """
        from openapi_core.testing import MockRequest
        from werkzeug.datastructures import ImmutableMultiDict

        _known(route.query, query)
        _known(route.body, body)
        request = MockRequest("https://api.stripe.com", route.method, path, args=ImmutableMultiDict(query),
                              headers=headers, data=raw_body, content_type=FORM)
        result = self.api.unmarshal_request(request)
        if result.errors:
            raise _stripe_error(result.errors[0], query + body)
        return dict(result.parameters.query), dict(result.body or {})


def _known(allowed: dict[str, bool], pairs: list[tuple[str, str]]) -> None:
    for key, _ in pairs:
        name = key.partition("[")[0]
        if name not in allowed:
            raise StripeError(400, f"Received unknown parameter: {key}", code="parameter_unknown", param=key)
        if "[" in key and not allowed[name]:
            raise StripeError(400, f"Invalid {name}: must be a single value, not {key}",
                              code="parameter_invalid", param=name)


def _stripe_error(error: Exception, pairs: list[tuple[str, str]]) -> StripeError:
    cause = error.__cause__
    name = getattr(error, "name", None)
    kind = type(cause).__name__ if cause is not None else type(error).__name__
    if kind == "CastError":
        value, wanted = cause.value, cause.type
        param = name or next((k for k, v in pairs if v == value), None)
        code = "parameter_invalid_integer" if wanted == "integer" else "parameter_invalid"
        return StripeError(400, f"Invalid {wanted}: {value}", code=code, param=param)
    if kind == "MissingRequiredParameter" or kind == "MissingRequiredRequestBody":
        return StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    schema_errors = getattr(cause, "schema_errors", None) or ()
    if schema_errors:
        from jsonschema.exceptions import best_match

        problem = best_match(schema_errors)
        while problem.validator in ("anyOf", "oneOf") and problem.context:
            # The branch for the value's own type says what is wrong with it.
            relevant = [e for e in problem.context if e.validator not in ("type", "enum")]
            problem = best_match(relevant or problem.context)
        path = ([name] if name else []) + [str(p) for p in problem.absolute_path]
        if problem.validator == "required":
            missing = re.search(r"'([^']+)' is a required property", problem.message)
            path.append(missing.group(1) if missing else "")
            param = _param(path)
            return StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)
        extra = re.search(r"\('([^']+)' (was|were) unexpected\)", problem.message)
        if extra:
            param = _param([*path, extra.group(1).split("', '")[0]])
            return StripeError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)
        param = _param(path)
        return StripeError(400, f"Invalid {param}: {problem.message}", code="parameter_invalid", param=param or None)
    return StripeError(400, f"Invalid request: {error}", code="parameter_invalid", param=name)


def _param(path: list[str]) -> str:
    return path[0] + "".join(f"[{p}]" for p in path[1:]) if path else ""


# ---------------------------------------------------------------- shapes


def schema(name: str) -> dict[str, Any]:
    return load_spec()["components"]["schemas"][name]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema(node["$ref"].rsplit("/", 1)[1])
    return node


def blank(name: str) -> dict[str, Any]:
    """An object of schema ``name`` with every field Stripe returns by default:
    nullable ones ``None``, the others at their type's zero value. Optional
    strings that Stripe sends only sometimes (``webhook_endpoint.secret``) and
    lists it returns only when asked (``customer.sources``) are left out."""
    with _lock:
        template = _cache.setdefault("blank", {}).get(name)
    if template is None:
        template = _blank(schema(name), required=True, depth=0)
        with _lock:
            _cache["blank"][name] = template
    return copy.deepcopy(template)


def _blank(node: dict[str, Any], required: bool, depth: int) -> Any:
    node = _resolve(node)
    if node.get("nullable"):
        return None
    if "anyOf" in node:
        return _blank(node["anyOf"][0], required, depth)
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "object":
        wanted = set(node.get("required", ()))
        return {
            key: _blank(prop, key in wanted, depth + 1)
            for key, prop in node.get("properties", {}).items()
            if key in wanted or _included(prop, depth)
        }
    return {"array": [], "string": "", "integer": 0, "number": 0, "boolean": False}.get(kind)


def _included(prop: dict[str, Any], depth: int) -> bool:
    if prop.get("nullable"):
        return True
    prop = _resolve(prop)
    if prop.get("type") == "string" and "enum" not in prop:
        return False
    if prop.get("type") != "object" or "anyOf" in prop:
        return True
    is_list = prop.get("properties", {}).get("object", {}).get("enum") == ["list"]
    return not is_list and depth < 3


# ---------------------------------------------------------------- field schemas


ENTITY_OBJECTS = {
    "customers": "customer",
    "payment_intents": "payment_intent",
    "invoices": "invoice",
    "subscriptions": "subscription",
    "products": "product",
    "prices": "price",
    "charges": "charge",
    "payouts": "payout",
    "balance_transactions": "balance_transaction",
}
_MONEY = re.compile(r"^(amount|.*_amount|amount_.*|balance|subtotal|total|tax|fee|net|(starting|ending)_balance)$")


def field_table() -> dict[str, list[dict[str, Any]]]:
    """Every entity's fields from the spec: name, label, type, required (by the
    create operation), readonly (neither create nor update accepts it),
    create_only (the create operation accepts it, the update operation does
    not: a price's ``unit_amount``, a charge's ``amount``) and the spec's
    first sentence as description. The plugin ships this as ``fields.json``."""
    spec = load_spec()
    table = {}
    for entity, object_name in ENTITY_OBJECTS.items():
        update_path = next((p for p in spec["paths"] if re.fullmatch(rf"/v1/{entity}/\{{[^}}]+\}}", p)), "")
        creatable, required = _request_fields(spec, f"/v1/{entity}")
        updatable, _ = _request_fields(spec, update_path)
        table[entity] = [_field(name, prop, required=name in required, readonly=name not in creatable | updatable,
                                create_only=name in creatable - updatable)
                         for name, prop in schema(object_name)["properties"].items()]
    return table


def _request_fields(spec: dict[str, Any], path: str) -> tuple[set[str], set[str]]:
    """The parameters the ``POST`` of ``path`` takes, and those it requires
    (none for a path the spec does not have)."""
    body = spec["paths"].get(path, {}).get("post", {}).get("requestBody", {})
    body_schema = body.get("content", {}).get(FORM, {}).get("schema", {})
    return set(body_schema.get("properties", {})), set(body_schema.get("required", ()))


#: How deep sub-fields are listed (``shipping.address.city``); deeper objects are open.
SUB_FIELD_DEPTH = 2


def _field(name: str, prop: dict[str, Any], *, required: bool = False, readonly: bool = False,
           create_only: bool = False, depth: int = SUB_FIELD_DEPTH) -> dict[str, Any]:
    kind = _field_type(name, prop)
    description = _sentence(prop.get("description", ""))
    if kind == "datetime" and "Unix" not in description:
        description = f"{description} Unix time in seconds.".strip()
    inner = _shape(prop, kind) if depth > 0 else None
    return {
        "name": name,
        "label": name.replace("_", " ").capitalize(),
        "type": kind,
        "required": required,
        "readonly": readonly,
        "description": description,
        **({"create_only": True} if create_only else {}),
        **({"format": "unix"} if kind == "datetime" else {}),
        **({"fields": [_field(n, p, readonly=readonly, create_only=create_only, depth=depth - 1)
                       for n, p in inner.items()]}
           if inner else {}),
    }


def _shape(prop: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The properties of an object field (or of an array's items) when the spec
    fixes them: one schema, no free keys (``metadata``), not a list object."""
    if kind == "array":
        prop = prop.get("items") or {}
    elif kind != "object":
        return None
    options = prop.get("anyOf")
    if options:
        if len(options) != 1:
            return None  # one of several shapes: left open
        prop = options[0]
    prop = _resolve(prop)
    properties = prop.get("properties")
    if not properties or prop.get("additionalProperties") or "data" in properties and "has_more" in properties:
        return None
    return properties


def _field_type(name: str, prop: dict[str, Any]) -> str:
    options = prop.get("anyOf")
    if options:
        if any(o.get("type") == "string" for o in options):
            return "string"
        return "object"
    kind = prop.get("type", "object")
    if kind == "integer":
        if prop.get("format") == "unix-time":
            return "datetime"
        return "money" if _MONEY.match(name) else "integer"
    return kind if kind in ("string", "number", "boolean", "object", "array") else "object"


def _sentence(text: str) -> str:
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", re.sub(r"<[^>]+>", "", text)).replace("\n", " ").strip()
    text = text.replace("%s", "the currency's smallest unit")
    first = re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s", text, maxsplit=1)[0]
    return first if len(first) <= 200 else first[:197].rstrip() + "..."


def render_fields() -> str:
    """``fields.json``: one field per line, so that spec updates diff well."""
    entities = [
        f'  "{entity}": [\n' + ",\n".join("    " + json.dumps(f) for f in fields) + "\n  ]"
        for entity, fields in field_table().items()
    ]
    return "{\n" + ",\n".join(entities) + "\n}\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("fields.json")
    target.write_text(render_fields())
    print(f"wrote {target}")
