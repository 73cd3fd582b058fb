"""Field mappings: the provider's fields in the tenant's names and types, and back.

A sync config holds a list of mappings. Each maps a provider field path
(dotted, ``balances.available``) to a tenant field, with a transform:

- ``rename`` (the default): the value as it is;
- ``int``, ``float``, ``str``, ``bool``: type casts;
- ``date``, ``datetime``: ISO 8601 from ISO strings or epoch seconds (or
  milliseconds); written back as the provider holds the field (epoch
  seconds or milliseconds where it is a number, ISO 8601 text otherwise);
- ``cents_to_decimal`` (1234 → 12.34) and ``decimal_to_cents`` (12.34 → 1234):
  amounts in a currency's minor unit. With ``currency`` (a fixed ISO code,
  checked against :data:`ISO_CURRENCIES` and the provider's own) or
  ``currency_field`` (the provider field holding the record's currency) the
  currency's own decimals apply (¥500 is ``500``, 1.5 KWD is ``1500``);
  without, two;
- ``constant``: a fixed ``value``, whatever the provider says;
- ``join``: several provider fields into one (``first_name`` + ``last_name`` →
  ``name``, with ``separator``); ``split``: one provider field into several.

``default`` stands in for a missing (or unconvertible) provider value. Every
transform but ``constant`` is reversed when the tenant's changes are pushed.
Mappings are checked against the entity's schema when they are saved
(:func:`validate_mappings`), so a sync never discovers a bad mapping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.types import EntityField, EntitySchema, ValidationFailed

Transform = Literal[
    "rename", "int", "float", "str", "bool", "date", "datetime",
    "cents_to_decimal", "decimal_to_cents", "constant", "join", "split",
]

SCALARS = {"string", "integer", "number", "boolean", "datetime", "date", "money"}

#: Provider field types each transform can read (``None``: any type).
ACCEPTS: dict[str, set[str] | None] = {
    "rename": None,
    "str": SCALARS,
    "int": {"string", "integer", "number", "money", "boolean"},
    "float": {"string", "integer", "number", "money"},
    "bool": {"string", "integer", "boolean"},
    "date": {"string", "date", "datetime", "integer", "number"},
    "datetime": {"string", "date", "datetime", "integer", "number"},
    "cents_to_decimal": {"integer", "number", "money"},
    "decimal_to_cents": {"number", "money"},
    "join": {"string", "integer", "number"},
    "split": {"string"},
}

#: The transforms of amounts in a currency's minor unit.
_AMOUNTS = ("cents_to_decimal", "decimal_to_cents")

#: ISO 4217 decimals of the currencies that do not have two. A provider whose
#: API counts some currency otherwise says so in ``ProviderInfo.minor_units``.
ISO_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
                     "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4, "UYW": 4,
}

#: The active ISO 4217 alphabetic codes: List One (current currencies and
#: funds) of the standard's maintenance agency, SIX
#: (https://www.six-group.com/en/products-services/financial-information/data-standards.html),
#: as of 2026, with its recent additions: ZWG (2024), XCG (2025, for ANG) and
#: XAD. Withdrawn codes (ANG, BGN, CUC, HRK, SLL, ZWL) are not in it: a
#: provider whose API still counts one declares it in
#: ``ProviderInfo.minor_units``. A fixed ``currency`` of a mapping must be one
#: of these (or of those): a typo (JYP) would silently take two decimals.
ISO_CURRENCIES: frozenset[str] = frozenset("""
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
    CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD
    SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX
    USD USN UYI UYU UYW UZS VED VES VND VUV WST XAD XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD
    XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG
""".split())

#: How a provider holds a datetime field as a number (``EntityField.format``).
UNIX_SECONDS, UNIX_MILLISECONDS = "unix", "unix_ms"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

TRUE = {"true", "1", "yes", "y", "on", "t"}
FALSE = {"false", "0", "no", "n", "off", "f", ""}


class FieldMapping(BaseModel):
    """One provider field (or several) to one tenant field (or several)."""

    model_config = ConfigDict(extra="forbid")

    source: str | list[str] | None = Field(
        default=None, description="Provider field path (dotted), or a list of them for `join`; "
                                  "omitted for `constant`.")
    target: str | list[str] = Field(description="Tenant field name, or a list of them for `split`.")
    transform: Transform = "rename"
    default: Any = Field(default=None, description="Value used when the provider value is missing.")
    separator: str = Field(default=" ", max_length=10, description="For `join` and `split`.")
    value: Any = Field(default=None, description="For `constant`: the value.")
    currency: str | None = Field(
        default=None, min_length=3, max_length=3, pattern="^[A-Za-z]{3}$",
        description="For `cents_to_decimal` and `decimal_to_cents`: the amounts' ISO 4217 currency code (an "
                    "active one, or one the provider declares in its minor_units); its decimals apply instead "
                    "of two.")
    currency_field: str | None = Field(
        default=None, max_length=255,
        description="For `cents_to_decimal` and `decimal_to_cents`: the provider field (dotted path) holding "
                    "each record's currency code, whose decimals apply instead of two.")

    @model_validator(mode="after")
    def _constant_has_a_value(self) -> FieldMapping:
        # Checked as the mapping is parsed (from a request, before any dump fills in the defaults).
        if self.transform == "constant" and "value" not in self.model_fields_set:
            raise ValueError("constant takes a value (null for none)")
        return self

    def sources(self) -> list[str]:
        if self.source is None:
            return []
        return list(self.source) if isinstance(self.source, list) else [self.source]

    def targets(self) -> list[str]:
        return list(self.target) if isinstance(self.target, list) else [self.target]


class ConversionError(ValueError):
    """A value that does not convert. ``fields``: the tenant's fields it is
    about, where the conversion knows them better than its caller."""

    def __init__(self, message: str, *, fields: Iterable[str] = ()):
        super().__init__(message)
        self.fields = tuple(fields)


# ---------------------------------------------------------------- validation


def validate_mappings(schema: EntitySchema, mappings: Iterable[dict[str, Any] | FieldMapping],
                      minor_units: dict[str, int] | None = None,
                      account_fields: Collection[str] | None = None) -> list[FieldMapping]:
    """Parse and check mappings against the entity's fields.

    ``minor_units``: the decimals of the currencies the provider counts
    otherwise than ISO 4217 (``ProviderInfo.minor_units``), whose codes a
    fixed ``currency`` may name besides the active ISO 4217 codes. An amount
    mapping's ``default`` must fit its fixed currency's decimals (two without
    one; any, with a ``currency_field``, each record's own). ``account_fields``: the paths of the
    fields the connection's account adds (the ``account_fields`` hook); a
    path ``custom_fields`` matches is taken only if it is among them (or
    under one). None: any path the pattern matches is taken.

    :returns: the parsed mappings.
    :raises ValidationFailed: (422) naming every bad mapping: unknown provider
        fields (``unknown_field``), casts the field's type cannot take
        (``impossible_cast``), malformed or duplicate mappings, an unknown
        currency, a default that does not fit the transform or its currency
        (``invalid_mapping``). Each problem in its ``details`` has the
        request path of the value at fault (``mappings.1.source``, or
        ``mappings.1`` for the whole mapping), and the error's ``fields`` lists them.
    """
    provider_decimals = {str(code).strip().upper(): digits for code, digits in (minor_units or {}).items()}
    declared = set(provider_decimals)
    currencies = ISO_CURRENCIES | declared
    parsed: list[FieldMapping] = []
    problems: list[dict[str, Any]] = []

    def problem(index: int, code: str, message: str, field: str | None = None, key: str | int | None = None,
                *item: int) -> None:
        # ``key`` (and an ``item`` of a list value) is where in the mapping the value at fault is.
        path = ".".join(str(part) for part in ("mappings", index, *(() if key is None else (key, *item))))
        problems.append({"index": index, "code": code, "field": field, "message": message, "path": path})

    def at(value: Any, position: int) -> tuple[int, ...]:
        # The item of a list value (a join's sources, a split's targets) a problem is about.
        return (position,) if isinstance(value, list) else ()

    seen_targets: set[str] = set()
    for index, raw in enumerate(mappings):
        try:
            mapping = raw if isinstance(raw, FieldMapping) else FieldMapping.model_validate(raw)
        except ValueError as exc:
            problem(index, "invalid_mapping", f"mapping {index}: {_first_error(exc)}", None, _error_key(exc))
            continue
        parsed.append(mapping)
        shape = _shape_error(mapping)
        if shape:
            message, key = shape
            problem(index, "invalid_mapping", f"mapping {index}: {message}", None, key)
            continue
        if mapping.currency and mapping.currency.upper() not in currencies:
            others = f", nor one the provider declares ({', '.join(sorted(declared))})" if declared else ""
            problem(index, "invalid_mapping", f"mapping {index}: currency {mapping.currency!r} is not an active "
                                              f"ISO 4217 currency code{others}", "currency", "currency")
        if mapping.default is not None:
            try:
                tenant_value(mapping.transform, mapping.default)
                if mapping.transform == "cents_to_decimal" and not mapping.currency_field:
                    # The default stands in for an amount in the currency: it must be one, as a write
                    # of it would have to be (1.234 dollars, 1.5 yen are not).
                    code = (mapping.currency or "").upper()
                    to_minor_units(mapping.default, provider_decimals.get(code, ISO_MINOR_UNITS.get(code, 2)))
            except ConversionError as exc:
                problem(index, "invalid_mapping", f"mapping {index}: the default does not fit {mapping.transform}: "
                                                  f"{exc}", "default", "default")
        currency_field = mapping.currency_field
        if currency_field:
            unreadable = _path_problem(schema, currency_field, account_fields)
            if unreadable is None and (leaf := _leaf(schema, currency_field)) is not None and leaf.type != "string":
                unreadable = ("invalid_mapping", f"{schema.name}.{currency_field} is {leaf.type}: a currency_field "
                                                 f"names a text field holding each record's currency code")
            if unreadable is not None:
                code, message = unreadable
                problem(index, code, f"mapping {index}: {message} (its currency_field)", currency_field,
                        "currency_field")
        for position, target in enumerate(mapping.targets()):
            if not target or target in seen_targets:
                problem(index, "invalid_mapping", f"mapping {index}: target {target!r} is empty or mapped twice",
                        target, "target", *at(mapping.target, position))
            seen_targets.add(target)
        for position, source in enumerate(mapping.sources()):
            where = ("source", *at(mapping.source, position))
            unreadable = _path_problem(schema, source, account_fields)
            if unreadable is not None:
                code, message = unreadable
                problem(index, code, f"mapping {index}: {message}", source, *where)
                continue
            field_type = _field_type(schema, source)[0]
            allowed = ACCEPTS.get(mapping.transform)
            if allowed is not None and field_type is not None and field_type not in allowed:
                problem(index, "impossible_cast",
                        f"mapping {index}: cannot apply {mapping.transform} to {source!r} "
                        f"of type {field_type}", source, *where)
    if problems:
        first = problems[0]
        raise ValidationFailed("invalid mappings: " + "; ".join(p["message"] for p in problems),
                               code=first["code"], details=problems,
                               fields=dict.fromkeys(p["path"] for p in problems))
    return parsed


def _path_problem(schema: EntitySchema, path: str,
                  account_fields: Collection[str] | None) -> tuple[str, str] | None:
    """What keeps a mapping's provider ``path`` (a source, a currency_field)
    from reading a field: its code (``unknown_field``, ``invalid_mapping``)
    and why; None for a path that reads one (a declared field, a path into
    an open object, a field the account adds)."""
    if names_account_field(schema, path):
        if account_fields is not None and not _among(path, account_fields):
            return "unknown_field", f"this account's {schema.name} have no field {path!r}"
        return None  # a field the account adds (custom): its type shows in its records only
    if not _field_type(schema, path)[1]:
        return "unknown_field", f"{schema.name} has no field {path.split('.')[0]!r}"
    head = schema.field(path.split(".")[0]) if "." in path else None
    if head is None:
        return None
    item = path.split(".")[1]
    if head.type == "array" and not (item.isascii() and item.isdigit()):
        return "invalid_mapping", (f"{schema.name}.{head.name} is an array: a path into it names an item by its "
                                   f"index ({head.name}.0.…), not {path!r}")
    if head.type in SCALARS:
        return "unknown_field", (f"{schema.name}.{head.name} is {head.type}, so {path!r} reads nothing (a dotted "
                                 f"path reads into an object or array field)")
    nested = _declared(head, path.split(".")[1:])[1]
    return ("unknown_field", f"{schema.name}.{nested}") if nested else None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)


def _error_key(exc: ValueError) -> str | None:
    """The key of a mapping its first parse error is about (None: the whole mapping)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        loc = errors()[0].get("loc", ())
        return str(loc[0]) if loc else None
    return None


def _shape_error(m: FieldMapping) -> tuple[str, str | None] | None:
    """What is wrong with the shape of a mapping, and the key at fault (None: the whole mapping)."""
    sources, targets = m.sources(), m.targets()
    if (m.currency or m.currency_field) and m.transform not in _AMOUNTS:
        return ("currency and currency_field apply to cents_to_decimal and decimal_to_cents only",
                "currency" if m.currency else "currency_field")
    if m.currency and m.currency_field:
        return "give currency (a fixed code) or currency_field (where each record has it), not both", None
    if m.transform == "constant":
        if sources:
            return "constant takes a value, not a source", "source"
        if len(targets) != 1:
            return "constant has one target", "target"
        return None
    if m.transform in ("join", "split") and not m.separator:
        return "separator must not be empty", "separator"
    if m.transform == "join":
        if len(sources) < 2 or len(targets) != 1:
            return ("join takes a list of two or more sources and one target",
                    "source" if len(sources) < 2 else "target")
        return None
    if m.transform == "split":
        if len(sources) != 1 or len(targets) < 2:
            return ("split takes one source and a list of two or more targets",
                    "source" if len(sources) != 1 else "target")
        return None
    if len(sources) != 1 or len(targets) != 1:
        return f"{m.transform} takes one source and one target", "source" if len(sources) != 1 else "target"
    return None


def _field_type(schema: EntitySchema, path: str) -> tuple[str | None, bool]:
    """The declared type of the field a path reads, and whether its first
    part is a field of the entity.

    A dotted path reads into an object or array field: the type inside is
    the declared sub-field's (``EntityField.fields``), else unknown.
    """
    if not schema.fields:
        return None, True
    if schema.field(path.partition(".")[0]) is None:
        return None, False
    leaf = _leaf(schema, path)
    return (leaf.type if leaf is not None else None), True


def _leaf(schema: EntitySchema, path: str) -> EntityField | None:
    """The declared field a path names: an entity's field, or a declared
    sub-field (with its type, format and flags); None inside open objects."""
    head, _, rest = path.partition(".")
    field = schema.field(head)
    if field is None or not rest:
        return field
    return _declared(field, rest.split("."))[0]


def _declared(field: EntityField, rest: list[str]) -> tuple[EntityField | None, str | None]:
    """Follow the ``rest`` of a dotted path inside ``field`` through its
    declared sub-fields: the field the path ends at (None for an array's item
    or inside an open object), or what is wrong with the path."""
    where, at = field.name, 0
    while at < len(rest):
        part = rest[at]
        if field.type == "array":
            if not (part.isascii() and part.isdigit()):
                return None, (f"{where} is an array: a path into it names an item by its index ({where}.0.…), "
                              f"not {part!r}")
            where, at = f"{where}.{part}", at + 1
            if at == len(rest) or not field.fields:
                return None, None  # the item itself, or inside an item of no declared shape
            part = rest[at]
        elif field.type in SCALARS:
            return None, f"{where} is {field.type}: it has no {part!r} (a path reads into objects and arrays)"
        elif not field.fields:
            return None, None  # an open object (metadata)
        inner = field.field(part)
        if inner is None:
            return None, f"{where} has no field {part!r} (its fields: {', '.join(f.name for f in field.fields)})"
        field, where, at = inner, f"{where}.{part}", at + 1
    return field, None


# ---------------------------------------------------------------- paths


def get_path(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isascii() and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``data``, making the objects on the way. Two mappings
    writing a field and a path inside it (``metadata`` and ``metadata.tier``)
    cannot both be honoured: a :class:`ConversionError`, not one lost."""
    parts = path.split(".")
    for depth, part in enumerate(parts[:-1], 1):
        nested = data.setdefault(part, {})
        if not isinstance(nested, dict):
            raise ConversionError(f"cannot write {path!r}: another mapping writes {'.'.join(parts[:depth])!r} "
                                  f"whole; change one of them at a time")
        data = nested
    if isinstance(data.get(parts[-1]), dict):
        raise ConversionError(f"cannot write {path!r} whole: other mappings write paths inside it; "
                              f"change one of them at a time")
    data[parts[-1]] = value


# ---------------------------------------------------------------- conversions


def parse_datetime(value: Any, unit: str = "") -> datetime:
    """A timezone-aware datetime from a datetime, a date, epoch seconds (or
    milliseconds) or an ISO 8601 string. A number is taken in ``unit``
    (``EntityField.format``: ``unix`` or ``unix_ms``) where it is known, and
    otherwise by its size (milliseconds beyond 1e11: from March 1973 on)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, bool):
        raise ConversionError("a boolean is not a time")
    if isinstance(value, (int, float)):
        try:
            milliseconds = unit == UNIX_MILLISECONDS or (unit != UNIX_SECONDS and abs(value) > 1e11)
            return datetime.fromtimestamp(value / 1000 if milliseconds else value, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ConversionError(f"{value!r} is not a time this side of year 10000") from None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            if text.isascii() and text.lstrip("-").replace(".", "", 1).isdigit():  # not "²": str.isdigit says yes
                return parse_datetime(float(text), unit)
            raise ConversionError(f"{value!r} is not a date or time") from None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        try:
            parsed.astimezone(timezone.utc)
        except OverflowError:  # 9999-12-31T23:59:59-12:00 is in year 10000 in UTC
            raise ConversionError(f"{value!r} is not a time this side of year 10000 in UTC") from None
        return parsed
    raise ConversionError(f"{type(value).__name__} is not a date or time")


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise ConversionError(f"{value!r} is not a boolean")


#: How a number may be written as text: ASCII digits, a sign, a point, an
#: exponent (Python also reads "1_000" and other scripts' digits).
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _number_text(value: Any) -> None:
    if isinstance(value, str) and not _NUMBER_TEXT.fullmatch(value.strip()):
        raise ConversionError(f"{value[:40]!r} is not a number")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    _number_text(value)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConversionError(f"{value!r} is not a number") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise ConversionError(f"{value!r} is not an integer")
    return int(_bounded(number, value))


#: Numbers converted have at most this many digits before the decimal point:
#: int("1e999999") alone takes half a minute of CPU.
MAX_DIGITS = 18


def _bounded(number: Decimal, value: Any) -> Decimal:
    if number and number.adjusted() >= MAX_DIGITS:
        raise ConversionError(f"{str(value)[:40]!r} is too large: at most {MAX_DIGITS} digits before the decimal point")
    return number


def to_cents(value: Any) -> int:
    """A whole number of minor units (cents): never a boolean, never a fraction."""
    if isinstance(value, bool):
        raise ConversionError("a boolean is not an amount")
    return to_int(value)


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ConversionError("a boolean is not a number")
    _number_text(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConversionError(f"{value!r} is not a number") from None
    except OverflowError:
        raise ConversionError(f"{value!r} is too large for a floating-point number") from None
    if not math.isfinite(number):
        raise ConversionError(f"{value!r} is not a finite number")
    return number


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ConversionError("a boolean is not a number")
    _number_text(value)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConversionError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ConversionError(f"{value!r} is not a finite number")
    return _bounded(number, value)


def _number(d: Decimal) -> int | float:
    return int(d) if d == d.to_integral_value() else float(d)


#: Significant digits a JSON number (a double) always holds exactly.
_EXACT_DIGITS = 15


def _exact(amount: Decimal, value: Any) -> int | float:
    """An amount as a JSON number, refused where a double would round it (a
    cent off a quadrillion): money is not shown approximately."""
    number = _number(amount)
    if isinstance(number, float) and len(amount.normalize().as_tuple().digits) > _EXACT_DIGITS:
        raise ConversionError(f"{str(value)[:40]!r} has more than {_EXACT_DIGITS} significant digits: a JSON "
                              f"number would not hold it exactly (send it as text)")
    return number


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def forward(m: FieldMapping, value: Any, decimals: int = 2, time_format: str = "") -> Any:
    """Apply a one-source transform, provider → tenant; ``decimals``: those
    of the amount's currency (for the amount transforms); ``time_format``:
    the unit of an epoch time (the field's ``format``)."""
    t = m.transform
    if t == "rename":
        return value
    if t == "str":
        return _to_str(value)
    if t == "int":
        return to_int(value)
    if t == "float":
        return to_float(value)
    if t == "bool":
        return to_bool(value)
    if t == "date":
        return parse_datetime(value, time_format).date().isoformat()
    if t == "datetime":
        return parse_datetime(value, time_format).astimezone(timezone.utc).isoformat()
    if t == "cents_to_decimal":
        return _exact(to_decimal(value).scaleb(-decimals), value)
    if t == "decimal_to_cents":
        return to_minor_units(value, decimals)
    raise ConversionError(f"{t} is not a one-field transform")


def backward(m: FieldMapping, value: Any, field_type: str | None, decimals: int = 2, time_format: str = "",
             current: Any = None) -> Any:
    """Reverse a one-source transform, tenant → provider, into ``field_type``.

    A time goes back as the provider holds the field: epoch seconds or
    milliseconds where its ``time_format`` (``EntityField.format``) says so,
    or where the field is a number (milliseconds when the provider's
    ``current`` value is one); ISO 8601 text otherwise. A date written into
    a time (``date`` over a datetime field) keeps the ``current`` time's
    time of day and offset (midnight UTC where there is none), so that it
    reads back as the same date. A number (a cast's,
    an amount of ``decimal_to_cents``) goes back as text where ``current``
    is a number as text (see :func:`cast_to`).
    """
    t = m.transform
    if value is None:
        return None
    if t == "rename":
        return value
    if t in ("str", "int", "float", "bool"):
        # The tenant's field has the transform's type: what goes back is its value in it
        # (True as an int is 1, "1e3" is 1000), then in the provider field's type.
        return cast_to(field_type, tenant_value(t, value), current)
    if t in ("date", "datetime"):
        moment = parse_datetime(value)
        numeric = isinstance(current, (int, float)) and not isinstance(current, bool)
        held = _held_time(current, time_format) if t == "date" and _is_date(value) else None
        if held is not None:
            # A date read out of a time is its date in the time's own offset: the new date goes
            # back at the held time of day, in that offset (midnight UTC is the evening before
            # west of Greenwich, and would read back a day early).
            moment = datetime.combine(moment.date(), held.timetz())
        unit = time_format or (
            (UNIX_MILLISECONDS if abs(current) > 1e11 else UNIX_SECONDS) if numeric
            else UNIX_SECONDS if field_type in ("integer", "number") else "")
        if unit == UNIX_MILLISECONDS:
            return (moment - _EPOCH) // timedelta(milliseconds=1)
        if unit == UNIX_SECONDS:
            return (moment - _EPOCH) // timedelta(seconds=1)
        if field_type == "date" or (t == "date" and field_type != "datetime"):
            return moment.date().isoformat()
        return (moment if held is not None else moment.astimezone(timezone.utc)).isoformat()
    if t == "cents_to_decimal":
        return to_minor_units(value, decimals)
    if t == "decimal_to_cents":
        # Whole cents only (1234.5 is not an amount in cents), exact as a JSON number, then in
        # the field's type as the provider holds it (Shopify's prices as text, "19.90").
        cents = to_cents(value)
        return cast_to(field_type, _exact(Decimal(cents).scaleb(-decimals), value), current)
    raise ConversionError(f"{t} cannot be reversed")


def _is_date(value: Any) -> bool:
    """Whether a tenant's value is a date without a time of day ("2024-06-05")."""
    if isinstance(value, date):
        return not isinstance(value, datetime)
    if not isinstance(value, str):
        return False
    try:
        date.fromisoformat(value.strip())
    except ValueError:
        return False
    return True


def _held_time(current: Any, time_format: str) -> datetime | None:
    """The provider's current value of a time field, as a time in its own
    offset (UTC for epoch numbers); None if it holds none, or only a date."""
    if current in (None, "") or _is_date(current):
        return None
    try:
        return parse_datetime(current, time_format)
    except ConversionError:
        return None


def to_minor_units(value: Any, decimals: int = 2) -> int:
    """An amount with at most ``decimals`` decimal places in the currency's
    minor unit (cents for two); a finer amount is refused rather than rounded
    (12.345 is not a price in cents, nor 1.5 in yen), and so is a JSON number
    with more digits than a double holds (it arrived rounded: send such an
    amount as text)."""
    if isinstance(value, float) and len(Decimal(repr(value)).normalize().as_tuple().digits) > _EXACT_DIGITS:
        raise ConversionError(f"{value!r} has more digits than a JSON number holds exactly: send it as text")
    number = to_decimal(value)
    with localcontext() as exact:  # the default 28 digits would round 0.001 off a long amount
        exact.prec = max(28, len(number.as_tuple().digits) + 3)
        minor = number.scaleb(decimals)
    if minor != minor.to_integral_value():
        if not decimals:
            raise ConversionError(f"{value!r} has decimal places: the currency has none")
        places = {1: "one decimal place", 2: "two decimal places"}.get(decimals, f"{decimals} decimal places")
        raise ConversionError(f"{value!r} has more than {places}")
    return int(minor)


def check_value(field: EntityField, value: Any, held: Any = None, where: str = "") -> None:
    """Check a value written into a provider field against the field's
    declared type (and those of the declared sub-fields inside it), as the
    provider would take it: numbers also as number text (Stripe's form
    encoding, Shopify's prices), booleans also as ``"true"``/``"false"``,
    times as ISO 8601 text or epoch numbers. An amount (``money``) the
    provider holds as a whole number (``held``: Stripe's, in cents) takes
    whole numbers only. Null, empty text (Stripe's way to unset a field), and
    a value equal to the ``held`` one (a record read, then written back), are
    always taken. Providers write some fields in another shape than they read
    them, and those are taken too: a word in a time field (Stripe's
    ``trial_end: "now"``, ``billing_cycle_anchor: "unchanged"``), ``"inf"``
    in a number field (a price tier's ``up_to``), an array in an object
    field (a list object written as its items: a subscription's ``items``),
    and an id in place of an array's object item (``default_tax_rates``).

    :raises ConversionError: naming the field (``where``, else its name) and why.
    """
    where = where or field.name
    if value is None or value == "" or value == held:
        return

    def refuse(why: str) -> None:
        raise ConversionError(f"{where} is {field.type}: {why}", fields=())

    kind = field.type
    if kind in ("integer", "number", "money"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            refuse(f"{_shown(value)} is not a number")
        if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
            return
        try:
            number = to_decimal(value)
        except ConversionError as exc:
            refuse(str(exc))
        if kind == "integer" and number != number.to_integral_value():
            refuse(f"{_shown(value)} is not a whole number")
        if kind == "money" and isinstance(held, int) and not isinstance(held, bool) and (
                number != number.to_integral_value()):
            refuse(f"{_shown(value)} is not a whole number of the currency's minor unit, as the provider "
                   f"holds it")
    elif kind == "boolean":
        if isinstance(value, (dict, list)) or isinstance(value, float):
            refuse(f"{_shown(value)} is not a boolean")
        try:
            cast_to("boolean", value)
        except ConversionError as exc:
            refuse(str(exc))
    elif kind in ("datetime", "date"):
        if isinstance(value, (dict, list)):
            refuse(f"{_shown(value)} is not a date or time")
        if isinstance(value, str) and value.isascii() and value.isalpha():
            return  # (a word the provider takes for a time: "now")
        try:
            parse_datetime(value, field.format)
        except ConversionError as exc:
            refuse(str(exc))
    elif kind == "string":
        if isinstance(value, (dict, list)):
            refuse(f"{_shown(value)} is not text")
    elif kind == "object":
        if isinstance(value, list):
            return  # (a list object written as its items)
        if not isinstance(value, dict):
            refuse(f"{_shown(value)} is not an object")
        for name, inner in value.items():
            sub = field.field(name)
            if sub is not None:
                check_value(sub, inner, held.get(name) if isinstance(held, dict) else None, f"{where}.{name}")
    elif kind == "array":
        # (An object of indexes changes those items: {"0": {"qty": 2}}.)
        by_index = isinstance(value, dict) and all(k.isascii() and k.isdigit() for k in value)
        if not isinstance(value, list) and not by_index:
            refuse(f"{_shown(value)} is not an array")
        if field.fields:
            item = EntityField(field.name, type="object", fields=field.fields)
            for position, inner in (value.items() if by_index else enumerate(value)):
                if not isinstance(inner, dict):
                    continue  # (an object's id in its place: the provider's reference to it)
                position = int(position)
                was = held[position] if isinstance(held, list) and position < len(held) else None
                check_value(item, inner, was, f"{where}.{position}")


def _shown(value: Any) -> str:
    """A value in an error message: short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: What the tenant's side of each typed transform must convert with.
_TENANT_TYPES: dict[str, Any] = {
    "int": to_int, "float": to_float, "bool": to_bool, "date": parse_datetime, "datetime": parse_datetime,
    "cents_to_decimal": to_decimal, "decimal_to_cents": to_cents,
}


def tenant_value(transform: str, value: Any) -> Any:
    """Check (and convert) a tenant-side value of a transform: a write, or a default."""
    convert = _TENANT_TYPES.get(transform)
    return convert(value) if convert is not None else value


def cast_to(field_type: str | None, value: Any, current: Any = None) -> Any:
    """Convert a tenant value back into the provider field's declared type.

    A number goes back as text where the provider holds the field as text
    (``current``: Shopify's prices, ``"19.99"``), with at least as many
    decimal places as it has, so that it reads back the same."""
    if field_type == "integer":
        return to_int(value)
    if field_type in ("number", "money"):
        number = to_decimal(value)
        if isinstance(current, str) and _NUMBER_TEXT.fullmatch(current.strip()):
            held = Decimal(current.strip()).as_tuple().exponent
            places = -held if isinstance(held, int) and held < 0 else 0
            exact = number.quantize(Decimal(1).scaleb(-places)) if -number.as_tuple().exponent <= places else number
            return format(exact, "f")
        # Money is not written approximately: text with more digits than a double holds is refused.
        return _exact(number, value) if field_type == "money" else _number(number)
    if field_type == "boolean":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in (0, 1):
            raise ConversionError(f"{value!r} is not a boolean (0 or 1)")
        return to_bool(value)
    if field_type in ("string", "datetime", "date"):
        return _to_str(value)
    return value


# ---------------------------------------------------------------- applying


def _joined(parts: list[Any], separator: str) -> str | None:
    """The ``join`` of provider values: the present ones, as text; ``None`` if none is."""
    present = [_to_str(p) for p in parts if p not in (None, "")]
    return separator.join(present) if present else None


def names_account_field(schema: EntitySchema, path: str) -> bool:
    """Whether ``path`` names a field an account adds (``custom_fields``),
    not one the schema declares."""
    return _leaf(schema, path) is None and schema.custom(path)


def _among(path: str, fields: Collection[str]) -> bool:
    """Whether ``path`` is one of ``fields`` or a path into one."""
    parts = path.split(".")
    return any(".".join(parts[:end]) in fields for end in range(len(parts), 0, -1))


def _split_joined(value: Any, separator: str, count: int, held: list[Any] | None) -> list[Any]:
    """A joined value cut back into ``count`` pieces.

    Cut on the first separators ("Mary Ann Smith" → "Mary", "Ann Smith"),
    except where the provider's current pieces (``held``) still begin or
    end it: with "Mary Ann" and "Smith" held, "Mary Ann Jones" keeps
    "Mary Ann", and "Anne Smith" keeps "Smith"; with "Smith" alone held as
    the last piece, "Smyth" replaces it there. A name is not moved from
    one field into the other because one part changed. Separators leading
    or ending the value (" Grace Hopper", pasted) stand between no pieces
    (a join leaves empty pieces out) and are dropped first.
    """
    text = _to_str(value) if value is not None else ""
    while text.startswith(separator):
        text = text[len(separator):]
    while text.endswith(separator):
        text = text[:-len(separator)]
    if not text:
        return []
    if held is not None and count == 2:
        first, last = (_to_str(p) if p not in (None, "") else "" for p in held)
        if first and text.startswith(first + separator) and len(text) > len(first + separator):
            return [first, text[len(first + separator):]]
        if last and text.endswith(separator + last) and len(text) > len(separator + last):
            return [text[:-len(separator + last)], last]
        if bool(first) != bool(last) and separator not in text:
            # One piece held (a contact of a last name only): a value of one piece replaces it there,
            # the other left as the provider holds it.
            return [text, held[1]] if first else [held[0], text]
    return text.split(separator, count - 1)


class Mapper:
    """Applies one sync config's mappings in both directions.

    With no mappings both directions are the identity. ``minor_units`` (the
    provider's ``ProviderInfo.minor_units``) gives the decimals of currencies
    the provider counts otherwise than ISO 4217.
    """

    def __init__(self, schema: EntitySchema, mappings: Iterable[dict[str, Any] | FieldMapping],
                 minor_units: dict[str, int] | None = None):
        self.schema = schema
        self.mappings = [m if isinstance(m, FieldMapping) else FieldMapping.model_validate(m) for m in mappings]
        self.minor_units = {code.upper(): digits for code, digits in (minor_units or {}).items()}
        #: The epoch unit of each time a mapping reads (its field's ``format``), where declared.
        self.time_formats = {source: leaf.format for m in self.mappings if m.transform in ("date", "datetime")
                             for source in m.sources() if (leaf := _leaf(schema, source)) is not None and leaf.format}

    def decimals(self, m: FieldMapping, record: dict[str, Any], fallback: dict[str, Any] | None = None) -> int:
        """The decimals of an amount mapping's currency: its fixed
        ``currency``, or the one ``record`` (else ``fallback``) holds at its
        ``currency_field``; two for a mapping that names neither."""
        code: Any = m.currency
        if m.currency_field:
            code = get_path(record, m.currency_field)
            if code in (None, "") and fallback is not None:
                code = get_path(fallback, m.currency_field)
            if not isinstance(code, str) or not code.strip():
                raise ConversionError(f"the record has no currency code in {m.currency_field!r}")
        if code is None:
            return 2
        code = code.strip().upper()
        return self.minor_units.get(code, ISO_MINOR_UNITS.get(code, 2))

    @property
    def identity(self) -> bool:
        return not self.mappings

    def to_tenant(self, data: dict[str, Any], problems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Provider record → the tenant's fields. Values that cannot be
        converted become the mapping's default, and each is noted in
        ``problems`` (target field, source path, why), when given."""
        if self.identity:
            return dict(data)
        out: dict[str, Any] = {}
        for m in self.mappings:
            t = m.transform
            if t == "constant":
                out[m.targets()[0]] = m.value
                continue
            if t == "join":
                joined = _joined([get_path(data, s) for s in m.sources()], m.separator)
                out[m.targets()[0]] = joined if joined is not None else m.default
                continue
            value = get_path(data, m.sources()[0])
            if t == "split":
                targets = m.targets()
                pieces = _to_str(value).split(m.separator, len(targets) - 1) if value not in (None, "") else []
                for i, target in enumerate(targets):
                    out[target] = pieces[i] if i < len(pieces) else m.default
                continue
            if value is None:
                out[m.targets()[0]] = m.default
                continue
            try:
                out[m.targets()[0]] = forward(m, value, self.decimals(m, data) if t in _AMOUNTS else 2,
                                              self.time_formats.get(m.sources()[0], ""))
            except ConversionError as exc:
                out[m.targets()[0]] = m.default
                if problems is not None:
                    problems.append({"field": m.targets()[0], "source": m.sources()[0], "transform": t,
                                     "error": str(exc)})
        return out

    def tenant_fields(self, paths: Iterable[str]) -> list[str]:
        """The tenant's fields mapped from the provider's field ``paths`` (those
        a refusal names): the targets of every mapping that reads a path,
        something inside it, or the object it lies in, in mapping order. With
        no mappings, the paths themselves."""
        paths = list(dict.fromkeys(paths))
        if self.identity:
            return paths

        def overlap(source: str, path: str) -> bool:
            return source == path or source.startswith(path + ".") or path.startswith(source + ".")

        out: list[str] = []
        for m in self.mappings:
            if any(overlap(source, path) for source in m.sources() for path in paths):
                out.extend(t for t in m.targets() if t not in out)
        return out

    def to_provider(self, changes: dict[str, Any], current: dict[str, Any] | None = None,
                    raw: dict[str, Any] | None = None) -> dict[str, Any]:
        """The tenant's changed fields → provider fields to write.

        ``current`` is the record's current tenant view; it completes
        ``join``/``split`` groups the change names only part of. ``raw``, the
        provider's current record, tells how it holds what is written back
        (a time as epoch milliseconds, the currency of an amount whose
        currency the change does not name). Read-only provider fields and
        ``constant`` targets are left out.

        :raises ValidationFailed: a field no mapping targets
            (``unknown_field``); a ``constant`` target given another value than
            the constant's, in a create (no ``current``) as in an update
            (``read_only_field``); a value that cannot be converted back
            (``invalid_value``).
        """
        if self.identity:
            return self._raw(changes, raw)
        targets = {t for m in self.mappings for t in m.targets()}
        unknown = sorted(set(changes) - targets)
        if unknown:
            raise ValidationFailed(f"no mapping targets the field(s) {', '.join(unknown)}", code="unknown_field",
                                   details={"unknown": unknown}, fields=unknown)
        view = {**(current or {}), **changes}
        out: dict[str, Any] = {}
        written: dict[str, tuple[str, Any]] = {}

        def put(source: str, value: Any, target: str) -> None:
            # Two mappings of one provider field (a rename and a cents_to_decimal of ``amount``)
            # changed to different values: one would be lost.
            if source in written and written[source][1] != value:
                raise ConversionError(f"{written[source][0]!r} and {target!r} both write {source!r}, with "
                                      f"different values", fields=(written[source][0], target))
            written[source] = (target, value)
            set_path(out, source, value)

        # A constant is the tenant's own value: another value for it, in a create as in an
        # update, would go nowhere. (A read-only provider field is left out instead: a record
        # read, then written back whole after a pull moved its updated_at, must not be refused.)
        fixed = sorted(t for m in self.mappings if m.transform == "constant" for t in m.targets()
                       if t in changes and changes[t] != m.value)
        if fixed:
            raise ValidationFailed(f"{', '.join(fixed)} cannot be set: a constant of the mapping",
                                   code="read_only_field", details={"fields": fixed}, fields=fixed)
        m: FieldMapping | None = None
        #: The values going back as they are (``rename``), checked once every mapping has put its
        #: own (two writing one field is the first thing to say); the casts convert into the type.
        renamed: list[tuple[EntityField, Any, Any, str, list[str]]] = []
        try:
            # Amounts whose currency is in the record go last: the change may set the currency too.
            for m in sorted(self.mappings, key=lambda m: bool(m.currency_field)):
                if m.transform == "constant" or not set(m.targets()) & set(changes):
                    continue
                if m.transform == "split":
                    source = m.sources()[0]
                    if not self._writable(source):
                        continue
                    put(source, self._split_back(m, changes, view, raw), m.targets()[0])
                    continue
                value = view.get(m.targets()[0])
                if m.transform == "join":
                    sources = m.sources()
                    held = [get_path(raw, s) for s in sources] if raw is not None else None
                    if held is not None and value == _joined(held, m.separator):
                        for source, piece in zip(sources, held):  # unchanged: exactly as the provider holds it
                            if self._writable(source):
                                put(source, piece, m.targets()[0])
                        continue
                    pieces = _split_joined(value, m.separator, len(sources), held)
                    for i, source in enumerate(sources):
                        if self._writable(source):
                            piece = pieces[i] if i < len(pieces) else ""
                            field_type = _field_type(self.schema, source)[0]
                            # Each piece in its field's type (an amount joined with its currency).
                            put(source, cast_to(field_type, piece) if piece not in ("", None) and field_type else piece,
                                m.targets()[0])
                    continue
                source = m.sources()[0]
                if self._writable(source):
                    field = _leaf(self.schema, source)
                    decimals = self.decimals(m, out, raw) if m.transform in _AMOUNTS else 2
                    held = get_path(raw or {}, source)
                    back = backward(m, value, field.type if field is not None else None, decimals,
                                    field.format if field is not None else "", held)
                    put(source, back, m.targets()[0])
                    if m.transform == "rename" and field is not None:
                        renamed.append((field, back, held, source, m.targets()))
            for field, value, held, source, fields in renamed:
                try:
                    check_value(field, value, held, source)
                except ConversionError as exc:
                    raise ConversionError(str(exc), fields=fields) from None
        except ConversionError as exc:
            # The tenant's fields of the mapping whose conversion failed (those the change names).
            fields = exc.fields or ([t for t in m.targets() if t in changes] or m.targets() if m is not None
                                    else [])
            raise ValidationFailed(f"cannot convert back: {exc}", code="invalid_value", fields=fields) from None
        return out

    def _split_back(self, m: FieldMapping, changes: dict[str, Any], view: dict[str, Any],
                    raw: dict[str, Any] | None) -> str:
        """The provider value of a ``split`` mapping after ``changes``: the
        pieces it does not change as the provider holds them (not the
        mapping's default standing in for a missing one), and an emptied piece
        kept in its place, so that the value splits back into the same pieces
        (an emptied first name does not make the last name the first)."""
        targets = m.targets()
        if raw is not None:
            held_value = get_path(raw, m.sources()[0])
            held = (_to_str(held_value).split(m.separator, len(targets) - 1)
                    if held_value not in (None, "") else [])
        else:  # (no provider record: the tenant's view completes the change)
            held = [_to_str(view.get(t)) if view.get(t) is not None else "" for t in targets]
        parts = []
        for i, target in enumerate(targets):
            if target in changes:
                piece = _to_str(changes[target]) if changes[target] is not None else ""
                if m.separator in piece and i < len(targets) - 1:
                    # ("Mary Ann" + "Smith" would read back "Mary" + "Ann Smith": the value is cut on
                    # its first separators.)
                    raise ValidationFailed(
                        f"{target} must not hold {m.separator!r}: {m.sources()[0]} is split on its first "
                        f"{m.separator!r}, so it would read back otherwise than written", code="invalid_value",
                        fields=[target])
                parts.append(piece)
            else:
                parts.append(held[i] if i < len(held) else "")
        while parts and parts[-1] == "":
            parts.pop()
        return m.separator.join(parts)

    def _writable(self, path: str) -> bool:
        head, leaf = self.schema.field(path.split(".")[0]), _leaf(self.schema, path)
        return not any(f is not None and f.readonly for f in (head, leaf))

    def _raw(self, changes: dict[str, Any], raw: dict[str, Any] | None = None) -> dict[str, Any]:
        """Changes in the provider's shape: its declared fields (or those the
        account adds), each value checked against its field's type
        (:func:`check_value`); read-only fields left out."""
        if self.schema.fields:
            unknown = sorted(k for k in changes if self.schema.field(k) is None and not self.schema.custom(k))
            if unknown:
                raise ValidationFailed(f"{self.schema.name} has no field(s) {', '.join(unknown)}",
                                       code="unknown_field", details={"unknown": unknown}, fields=unknown)
        out = {k: v for k, v in changes.items() if self._writable(k)}
        for name, value in out.items():
            field = self.schema.field(name)
            if field is not None:
                try:
                    check_value(field, value, (raw or {}).get(name))
                except ConversionError as exc:
                    raise ValidationFailed(f"cannot write it: {exc}", code="invalid_value", fields=[name]) from None
        return out
