"""Field mappings: every transform both ways, defaults, and the checks made
when mappings are saved."""

from __future__ import annotations

import pytest

from hub.sync.mapping import Mapper, validate_mappings
from hub.types import EntityField, EntitySchema, ValidationFailed

ACCOUNT = EntitySchema("accounts", "Accounts", (
    EntityField("id", readonly=True),
    EntityField("first_name"),
    EntityField("last_name"),
    EntityField("full_name"),
    EntityField("balance_cents", type="integer"),
    EntityField("price", type="number"),
    EntityField("active", type="boolean"),
    EntityField("opened", type="date"),
    EntityField("created", type="integer"),
    EntityField("updated_at", type="datetime", readonly=True),
    EntityField("balances", type="object"),
    EntityField("count", type="string"),
))

RECORD = {
    "id": "acc_1", "first_name": "Ada", "last_name": "Lovelace", "full_name": "Grace Brewster Hopper",
    "balance_cents": 123456, "price": 19.99, "active": True, "opened": "2024-02-29",
    "created": 1700000000, "updated_at": "2026-01-02T03:04:05Z", "balances": {"available": "12.50"},
    "count": "42",
}


def mapper(*mappings):
    return Mapper(ACCOUNT, validate_mappings(ACCOUNT, mappings))


def test_each_transform_maps_provider_fields_to_tenant_fields():
    m = mapper(
        {"source": "id", "target": "external_id"},
        {"source": ["first_name", "last_name"], "target": "name", "transform": "join"},
        {"source": "full_name", "target": ["given", "family"], "transform": "split"},
        {"source": "balance_cents", "target": "balance", "transform": "cents_to_decimal"},
        {"source": "price", "target": "price_cents", "transform": "decimal_to_cents"},
        {"source": "active", "target": "is_active", "transform": "str"},
        {"source": "opened", "target": "opened_on", "transform": "date"},
        {"source": "created", "target": "created_at", "transform": "datetime"},
        {"source": "updated_at", "target": "updated_day", "transform": "date"},
        {"source": "balances.available", "target": "available", "transform": "float"},
        {"source": "count", "target": "count", "transform": "int"},
        {"target": "source_system", "transform": "constant", "value": "example"},
    )
    assert m.to_tenant(RECORD) == {
        "external_id": "acc_1", "name": "Ada Lovelace", "given": "Grace", "family": "Brewster Hopper",
        "balance": 1234.56, "price_cents": 1999, "is_active": "true", "opened_on": "2024-02-29",
        "created_at": "2023-11-14T22:13:20+00:00", "updated_day": "2026-01-02", "available": 12.5, "count": 42,
        "source_system": "example",
    }


def test_defaults_fill_missing_and_unconvertible_values():
    m = mapper({"source": "balances.pending", "target": "pending", "transform": "float", "default": 0},
               {"source": "count", "target": "count", "transform": "int", "default": -1},
               {"source": "first_name", "target": "first"})
    assert m.to_tenant({"count": "many", "balances": {}}) == {"pending": 0, "count": -1, "first": None}


def test_bool_casts_accept_common_spellings():
    m = mapper({"source": "count", "target": "flag", "transform": "bool"})
    assert [m.to_tenant({"count": v})["flag"] for v in ("yes", "0", "TRUE", "off")] == [True, False, True, False]


def test_reverse_mapping_converts_back_to_provider_types_and_shapes():
    m = mapper(
        {"source": ["first_name", "last_name"], "target": "name", "transform": "join"},
        {"source": "balance_cents", "target": "balance", "transform": "cents_to_decimal"},
        {"source": "price", "target": "price_cents", "transform": "decimal_to_cents"},
        {"source": "active", "target": "is_active", "transform": "str"},
        {"source": "created", "target": "created_at", "transform": "datetime"},
        {"source": "opened", "target": "opened_on", "transform": "date"},
        {"source": "balances.available", "target": "available", "transform": "float"},
        {"source": "count", "target": "count", "transform": "int"},
        {"source": "updated_at", "target": "updated", "transform": "datetime"},
        {"target": "source_system", "transform": "constant", "value": "example"},
    )
    changes = {"name": "Grace Hopper", "balance": "10.05", "price_cents": 250, "is_active": "false",
               "created_at": "2023-11-14T22:13:20Z", "opened_on": "2025-01-31", "available": 3.5, "count": 7,
               "updated": "2030-01-01T00:00:00Z", "source_system": "example"}
    assert m.to_provider(changes) == {
        "first_name": "Grace", "last_name": "Hopper", "balance_cents": 1005, "price": 2.5, "active": False,
        "created": 1700000000, "opened": "2025-01-31", "balances": {"available": 3.5}, "count": "7",
    }


def test_a_constant_given_its_own_value_is_left_out_and_another_value_refused_with_or_without_a_record():
    m = mapper({"source": "full_name", "target": "name"},
               {"target": "source_system", "transform": "constant", "value": "example"})
    assert m.to_provider({"name": "Ada Lovelace", "source_system": "example"}) == {"full_name": "Ada Lovelace"}
    for current in (None, m.to_tenant({"full_name": "Ada Lovelace"})):
        with pytest.raises(ValidationFailed) as refused:
            m.to_provider({"name": "Grace Hopper", "source_system": "crm"}, current=current)
        assert refused.value.code == "read_only_field" and list(refused.value.fields) == ["source_system"]


def test_round_trip_of_mapped_fields_is_lossless():
    m = mapper({"source": ["first_name", "last_name"], "target": "name", "transform": "join"},
               {"source": "balance_cents", "target": "balance", "transform": "cents_to_decimal"},
               {"source": "opened", "target": "opened_on", "transform": "date"})
    tenant = m.to_tenant(RECORD)
    back = m.to_provider(tenant)
    assert back == {"first_name": "Ada", "last_name": "Lovelace", "balance_cents": 123456, "opened": "2024-02-29"}


def test_split_completes_a_partial_change_from_the_current_record():
    m = mapper({"source": "full_name", "target": ["first", "last"], "transform": "split"})
    current = m.to_tenant({"full_name": "Ada Lovelace"})
    assert m.to_provider({"last": "Byron"}, current=current) == {"full_name": "Ada Byron"}


def test_a_split_written_back_keeps_the_pieces_the_provider_holds_and_never_sends_a_default():
    m = mapper({"source": "full_name", "target": ["first", "last"], "transform": "split", "default": "Unknown"})
    nameless = {"full_name": None}
    shown = m.to_tenant(nameless)
    assert shown == {"first": "Unknown", "last": "Unknown"}  # the defaults, for the tenant's eyes only
    assert m.to_provider({"first": "John"}, current=shown, raw=nameless) == {"full_name": "John"}
    held = {"full_name": "Ada Lovelace"}
    # An emptied first name keeps its place: the value splits back into the same pieces.
    emptied = m.to_provider({"first": ""}, current=m.to_tenant(held), raw=held)
    assert emptied == {"full_name": " Lovelace"} and m.to_tenant(emptied) == {"first": "", "last": "Lovelace"}
    assert m.to_provider({"last": None}, current=m.to_tenant(held), raw=held) == {"full_name": "Ada"}


def test_a_joined_name_written_back_keeps_the_pieces_the_provider_holds():
    """Cut on its first space alone, "Mary Ann Smith" written back moved
    "Ann" into the last name; a name with no first name moved into the first."""
    m = mapper({"source": ["first_name", "last_name"], "target": "name", "transform": "join"})
    held = {"first_name": "Mary Ann", "last_name": "Smith"}
    assert m.to_provider({"name": "Mary Ann Smith"}, raw=held) == held  # written back unchanged
    assert m.to_provider({"name": "Mary Ann Jones"}, raw=held) == {"first_name": "Mary Ann", "last_name": "Jones"}
    assert m.to_provider({"name": "Anne Marie Smith"}, raw=held) == {"first_name": "Anne Marie",
                                                                      "last_name": "Smith"}
    assert m.to_provider({"name": "Ada Lovelace"}, raw=held) == {"first_name": "Ada", "last_name": "Lovelace"}
    only_last = {"first_name": None, "last_name": "Smith"}
    assert m.to_provider({"name": "Smith"}, raw=only_last) == only_last
    assert m.to_provider({"name": "Mary Ann Smith"}) == {"first_name": "Mary", "last_name": "Ann Smith"}


def test_identity_without_mappings_drops_read_only_and_refuses_unknown_fields():
    m = Mapper(ACCOUNT, [])
    assert m.to_tenant(RECORD) == RECORD
    assert m.to_provider({"id": "x", "first_name": "Ada", "updated_at": "now"}) == {"first_name": "Ada"}
    with pytest.raises(ValidationFailed) as caught:
        m.to_provider({"nickname": "A"})
    assert caught.value.code == "unknown_field"


def test_writing_a_field_no_mapping_targets_is_refused():
    m = mapper({"source": "first_name", "target": "first"})
    with pytest.raises(ValidationFailed) as caught:
        m.to_provider({"surname": "x"})
    assert caught.value.code == "unknown_field" and "surname" in caught.value.message


def test_the_provider_fields_a_refusal_names_are_shown_as_the_tenant_fields_mapped_from_them():
    m = mapper({"source": "first_name", "target": "first"}, {"source": "balances.available", "target": "available"},
               {"source": ["first_name", "last_name"], "target": "name", "transform": "join"},
               {"target": "origin", "transform": "constant", "value": "bank"},
               {"source": "balances", "target": "all_balances"})
    assert m.tenant_fields(["first_name"]) == ["first", "name"]
    # A refused object names what is read inside it; a refused path inside an object, what reads the object.
    assert m.tenant_fields(["balances"]) == ["available", "all_balances"]
    assert m.tenant_fields(["balances.available", "balances.available"]) == ["available", "all_balances"]
    assert m.tenant_fields(["balances_total", "price"]) == []  # neither mapped (nor a prefix match)
    assert mapper().tenant_fields(["price", "balances.available"]) == ["price", "balances.available"]


def test_unconvertible_value_on_write_is_refused():
    m = mapper({"source": "balance_cents", "target": "balance", "transform": "cents_to_decimal"},
               {"source": "count", "target": "count", "transform": "int"})
    # Not a number; a fraction of a cent (refused, not rounded); text under an int field of the tenant's.
    for change, needle in (({"balance": "lots"}, "not a number"), ({"balance": 1.005}, "two decimal places"),
                           ({"count": "x"}, "not a number")):
        with pytest.raises(ValidationFailed) as caught:
            m.to_provider(change)
        assert caught.value.code == "invalid_value" and needle in caught.value.message
    assert m.to_provider({"balance": "12.34", "count": 7}) == {"balance_cents": 1234, "count": "7"}


def test_a_default_must_fit_its_transform():
    with pytest.raises(ValidationFailed) as caught:
        validate_mappings(ACCOUNT, [{"source": "count", "target": "n", "transform": "int", "default": "abc"}])
    assert caught.value.code == "invalid_mapping" and "default does not fit int" in caught.value.message
    validate_mappings(ACCOUNT, [{"source": "count", "target": "n", "transform": "int", "default": "7"}])


@pytest.mark.parametrize(("mapping", "code", "needle"), [
    ({"source": "nickname", "target": "n"}, "unknown_field", "nickname"),
    ({"source": "bogus.inner", "target": "n"}, "unknown_field", "bogus"),
    ({"source": "first_name.foo", "target": "n"}, "unknown_field", "first_name is string"),
    ({"source": "active.x", "target": "n", "transform": "int"}, "unknown_field", "a dotted path reads into"),
    ({"source": "active", "target": "d", "transform": "date"}, "impossible_cast", "boolean"),
    ({"source": "first_name", "target": "c", "transform": "cents_to_decimal"}, "impossible_cast", "string"),
    ({"source": "count", "target": "c", "transform": "decimal_to_cents"}, "impossible_cast", "string"),
    ({"source": "balances", "target": "b", "transform": "int"}, "impossible_cast", "object"),
    ({"source": "first_name", "target": "n", "transform": "join"}, "invalid_mapping", "join"),
    ({"source": "first_name", "target": "n", "transform": "shout"}, "invalid_mapping", "transform"),
    ({"source": "first_name", "target": "n", "transform": "constant"}, "invalid_mapping", "constant"),
    ({"target": "n", "transform": "constant"}, "invalid_mapping", "constant takes a value"),
])
def test_bad_mappings_are_refused_with_a_clear_error(mapping, code, needle):
    with pytest.raises(ValidationFailed) as caught:
        validate_mappings(ACCOUNT, [mapping])
    assert caught.value.code == code
    assert needle in caught.value.message
    assert caught.value.status == 422


def test_dotted_paths_into_objects_accept_any_cast_and_duplicate_targets_are_refused():
    validate_mappings(ACCOUNT, [{"source": "balances.available", "target": "a", "transform": "cents_to_decimal"}])
    with pytest.raises(ValidationFailed) as caught:
        validate_mappings(ACCOUNT, [{"source": "first_name", "target": "x"}, {"source": "last_name", "target": "x"}])
    assert caught.value.code == "invalid_mapping" and caught.value.details[0]["index"] == 1


def test_values_out_of_range_are_refused_or_defaulted_never_an_internal_error():
    # Epoch seconds past year 9999, numbers beyond a float: Python raises OverflowError or
    # OSError there, which used to reach the API as a 500.
    m = mapper({"source": "opened", "target": "opened", "transform": "date", "default": None},
               {"source": "price", "target": "price", "transform": "float"})
    for change in ({"opened": 10**17}, {"opened": -10**19}, {"opened": "100000000000000000000"},
                   {"opened": 1e308}, {"price": 10**400}):
        with pytest.raises(ValidationFailed) as caught:
            m.to_provider(change)
        assert caught.value.code == "invalid_value", change
    problems: list = []
    assert m.to_tenant({"opened": "100000000000000000000", "price": 10**400}, problems) == \
        {"opened": None, "price": None}
    assert {p["field"] for p in problems} == {"opened", "price"}
    for mapping in ({"source": "opened", "target": "o", "transform": "date", "default": 10**17},
                    {"source": "price", "target": "p", "transform": "float", "default": 10**400}):
        with pytest.raises(ValidationFailed) as caught:
            validate_mappings(ACCOUNT, [mapping])
        assert caught.value.code == "invalid_mapping"


def test_a_write_through_a_field_and_a_path_inside_it_is_refused_not_half_made():
    m = mapper({"source": "balances", "target": "balances"},
               {"source": "balances.available", "target": "available"})
    for change in ({"balances": "flat", "available": "1"}, {"available": "1", "balances": None}):
        with pytest.raises(ValidationFailed) as caught:
            m.to_provider(change)
        assert caught.value.code == "invalid_value" and "change one of them at a time" in caught.value.message
    assert m.to_provider({"available": "2.00"}) == {"balances": {"available": "2.00"}}
    assert m.to_provider({"balances": {"available": "3"}}) == {"balances": {"available": "3"}}


def test_numbers_and_digits_that_cost_or_crash_are_refused_quickly():
    import time

    m = mapper({"source": "balance_cents", "target": "balance", "transform": "cents_to_decimal"},
               {"source": "count", "target": "count", "transform": "int"},
               {"source": "opened", "target": "opened", "transform": "date"})
    started = time.monotonic()
    # int("1e999999") alone takes half a minute of CPU; unicode digits pass str.isdigit.
    for change, needle in (({"count": "1e999999"}, "too large"), ({"count": "1e5000"}, "too large"),
                           ({"balance": "1e999999"}, "too large"),
                           ({"balance": "123456789012345678901234567.891"}, "too large"),
                           ({"opened": "\u00b2"}, "not a date"), ({"opened": "-\u00b3"}, "not a date")):
        with pytest.raises(ValidationFailed) as caught:
            m.to_provider(change)
        assert caught.value.code == "invalid_value" and needle in caught.value.message, change
    assert time.monotonic() - started < 10  # (not the half minute of CPU)
    # A fraction of a cent far down a long amount is still refused, not rounded away.
    for amount in ("1234567890123456.891", "1." + "0" * 40 + "1"):
        with pytest.raises(ValidationFailed, match="more than two decimal places"):
            m.to_provider({"balance": amount})
    assert m.to_provider({"balance": "123456789012345.67", "count": "999999999999999999"}) == \
        {"balance_cents": 12345678901234567, "count": "999999999999999999"}
    with pytest.raises(ValidationFailed) as caught:
        validate_mappings(ACCOUNT, [{"source": "count", "target": "n", "transform": "int", "default": "1e999999"}])
    assert caught.value.code == "invalid_mapping"


def test_a_provider_counting_a_currency_otherwise_than_iso_says_so_and_is_followed():
    """ISO 4217 gives ISK no decimals and MGA two; Stripe's API counts them the
    other way round, and its ``minor_units`` say so."""
    schema = EntitySchema("charges", "Charges", (EntityField("amount", type="money"), EntityField("currency")))
    mappings = validate_mappings(schema, [{"source": "amount", "target": "a", "transform": "cents_to_decimal",
                                           "currency_field": "currency"}])
    iso, stripe = Mapper(schema, mappings), Mapper(schema, mappings, {"mga": 0, "ISK": 2})
    assert iso.to_tenant({"amount": 50000, "currency": "isk"})["a"] == 50000
    assert iso.to_tenant({"amount": 50000, "currency": "MGA"})["a"] == 500
    assert stripe.to_tenant({"amount": 50000, "currency": "isk"})["a"] == 500
    assert stripe.to_tenant({"amount": 500, "currency": "mga"})["a"] == 500
    assert stripe.to_provider({"a": 7}, raw={"currency": "mga"}) == {"amount": 7}
    assert iso.to_provider({"a": 7}, raw={"currency": "mga"}) == {"amount": 700}


def test_only_a_datetime_field_has_a_format_and_only_unix_ones():
    from hub.plugins import schema_problems

    def problems(field):
        return schema_problems(EntitySchema("things", "Things", (EntityField("id"), field)))

    assert problems(EntityField("due", type="datetime", format="unix")) == []
    assert problems(EntityField("due", type="datetime", format="unix_ms")) == []
    assert "format 'epoch'" in problems(EntityField("due", type="datetime", format="epoch"))[0]
    assert "only a datetime field" in problems(EntityField("n", type="integer", format="unix"))[0]


BANK = EntitySchema("accounts", "Accounts", (
    EntityField("id", readonly=True),
    EntityField("balances", type="object", fields=(
        EntityField("available", type="number"), EntityField("iso_currency_code"),
        EntityField("limits", type="object", fields=(EntityField("daily", type="integer"),)))),
    EntityField("variants", type="array", fields=(EntityField("price", type="money"), EntityField("sku"))),
    EntityField("tags", type="array"),
    EntityField("metadata", type="object"),
))


@pytest.mark.parametrize(("source", "transform", "needle"), [
    ("balances.avialable", "rename", "balances has no field 'avialable' (its fields: available, iso_currency_code"),
    ("balances.limits.weekly", "rename", "balances.limits has no field 'weekly'"),
    ("balances.available.cents", "rename", "balances.available is number: it has no 'cents'"),
    ("variants.0.prize", "rename", "variants.0 has no field 'prize'"),
])
def test_paths_into_declared_sub_fields_must_name_one(source, transform, needle):
    """A mistyped nested path was taken and mapped every record to null, with no mapping error."""
    with pytest.raises(ValidationFailed) as caught:
        validate_mappings(BANK, [{"source": source, "target": "x", "transform": transform}])
    assert caught.value.code == "unknown_field" and needle in caught.value.message, caught.value.message


def test_declared_sub_fields_give_their_types_to_casts_and_open_objects_take_any_path():
    with pytest.raises(ValidationFailed) as caught:  # a number is no boolean
        validate_mappings(BANK, [{"source": "balances.available", "target": "d", "transform": "bool"}])
    assert caught.value.code == "impossible_cast" and "number" in caught.value.message
    with pytest.raises(ValidationFailed) as caught:
        validate_mappings(BANK, [{"source": "variants.0.sku", "target": "c", "transform": "decimal_to_cents"}])
    assert caught.value.code == "impossible_cast" and "string" in caught.value.message
    mapped = Mapper(BANK, validate_mappings(BANK, [
        {"source": "balances.available", "target": "available", "transform": "decimal_to_cents"},
        {"source": "balances.limits.daily", "target": "daily"},
        {"source": "variants.1.price", "target": "price"},
        {"source": "tags.0", "target": "first_tag"},
        {"source": "metadata.anything.deep", "target": "note"},
    ])).to_tenant({"id": "a", "balances": {"available": 12.5, "limits": {"daily": 500}},
                   "variants": [{"price": "1.00"}, {"price": "2.50"}], "tags": ["x"],
                   "metadata": {"anything": {"deep": "yes"}}})
    assert (mapped["available"], mapped["daily"], mapped["price"], mapped["first_tag"], mapped["note"]) == \
        (1250, 500, "2.50", "x", "yes")


def test_a_declared_sub_field_is_written_back_in_its_format_and_not_when_read_only():
    """``pause.resumes_at`` (Unix seconds, as Stripe takes it) went back as ISO text."""
    schema = EntitySchema("subscriptions", "Subscriptions", (
        EntityField("id", readonly=True),
        EntityField("trial_end", type="datetime", format="unix"),
        EntityField("pause", type="object", fields=(
            EntityField("resumes_at", type="datetime", format="unix"), EntityField("behavior"),
            EntityField("paused_by", readonly=True))),
    ))
    mapper = Mapper(schema, validate_mappings(schema, [
        {"source": "trial_end", "target": "trial_ends", "transform": "datetime"},
        {"source": "pause.resumes_at", "target": "resume_on", "transform": "datetime"},
        {"source": "pause.paused_by", "target": "paused_by"},
    ]))
    out = mapper.to_provider({"trial_ends": "2030-01-01T00:00:00Z", "resume_on": "2030-01-01T00:00:00Z",
                              "paused_by": "someone"}, {"id": "sub_1", "trial_end": None, "pause": None})
    assert out["trial_end"] == 1893456000
    assert out["pause"] == {"resumes_at": 1893456000}  # and not the read-only paused_by


TYPED = EntitySchema("typed", "Typed", (
    EntityField("count"), EntityField("active", type="boolean"), EntityField("amount", type="integer"),
    EntityField("price", type="number"), EntityField("total", type="money"),
    EntityField("stamp_ms", type="datetime", format="unix_ms"),
    EntityField("stamp", type="datetime", format="unix"),
))


def typed(*mappings):
    return Mapper(TYPED, validate_mappings(TYPED, mappings))


def test_a_cast_written_back_sends_the_tenants_value_converted_not_as_it_was_sent():
    m = typed({"source": "count", "target": "n", "transform": "int"},
              {"source": "amount", "target": "flag", "transform": "bool"},
              {"source": "active", "target": "on", "transform": "int"})
    # "count" is text at the provider: the number goes back as its digits, which read back the same.
    for sent, pushed in ((True, "1"), ("1e3", "1000"), (7.0, "7"), (" 42 ", "42")):
        written = m.to_provider({"n": sent})
        assert written == {"count": pushed} and m.to_tenant(written)["n"] == int(pushed)
    assert m.to_provider({"flag": "yes"}) == {"amount": 1}
    assert m.to_provider({"on": 1}) == {"active": True}
    with pytest.raises(ValidationFailed, match="not a boolean"):  # 5 is no boolean to write back
        m.to_provider({"on": 5})


def test_amounts_written_back_are_whole_cents_and_exact():
    m = typed({"source": "price", "target": "cents", "transform": "decimal_to_cents"},
              {"source": "total", "target": "total_text", "transform": "str"})
    assert m.to_provider({"cents": 1999}) == {"price": 19.99}
    # A fraction of a cent; more digits than a JSON number holds; a boolean (not one cent).
    for bad in (1234.5, 123456789012345678, True):
        with pytest.raises(ValidationFailed):
            m.to_provider({"cents": bad})
    assert m.to_provider({"total_text": "12.50"}) == {"total": 12.5}
    with pytest.raises(ValidationFailed, match="exactly"):  # not rounded to 92080819784908.8
        m.to_provider({"total_text": "92080819784908.79"})


def test_epoch_times_are_read_in_their_fields_declared_unit():
    """1973-01-01 in milliseconds (94,694,400,000) is below the size that
    tells milliseconds from seconds; read as seconds it was year 4970."""
    m = typed({"source": "stamp_ms", "target": "day", "transform": "date"},
              {"source": "stamp", "target": "at", "transform": "datetime"})
    assert m.to_tenant({"stamp_ms": 94694400000, "stamp": 200000000000}) == {
        "day": "1973-01-01", "at": "8307-10-01T19:33:20+00:00"}
    assert m.to_provider({"day": "1973-01-01"}) == {"stamp_ms": 94694400000}


def test_an_amount_the_provider_holds_as_text_goes_back_as_text_with_its_decimal_places():
    """Shopify holds prices as text ("19.99"): a price written back through
    a cast goes as text too, reading back the same (21.5 is "21.50")."""
    m = typed({"source": "total", "target": "total_value", "transform": "float"})
    held = {"total": "19.99"}
    assert m.to_provider({"total_value": 21.5}, raw=held) == {"total": "21.50"}
    assert m.to_provider({"total_value": "1e3"}, raw=held) == {"total": "1000.00"}
    assert m.to_provider({"total_value": 21.555}, raw=held) == {"total": "21.555"}  # finer: as it is
    assert m.to_provider({"total_value": 21.5}, raw={"total": 19.99}) == {"total": 21.5}  # a number stays one


def test_an_entitys_filters_are_checked_when_the_plugin_loads():
    from hub.plugins import schema_problems

    assert schema_problems(EntitySchema("things", "Things", filters=("vendor", "status"))) == []
    assert schema_problems(EntitySchema("things", "Things", filters=())) == []
    for wrong in ("vendor", ("limit",), ("vendor", 3), ("",)):
        [problem] = schema_problems(EntitySchema("things", "Things", filters=wrong))
        assert "filters" in problem


def test_filters_declared_for_a_list_records_that_takes_none_refuse_the_plugin():
    """Loaded, the catalog would show filters every use of which is refused (a review found it)."""
    from hub.plugins import PluginRegistry
    from hub.types import ProviderInfo
    from tests.conftest import module_plugin

    info = ProviderInfo(name="nofilters", label="No filters", category="test", auth_type="api_key")
    registry = PluginRegistry()
    record = registry.register(module_plugin("nofilters_plugin", info, [
        EntitySchema("things", "Things", filters=("colour",))]), "nofilters")
    assert record.error and "declares filters its list_records does not take" in record.error


def test_fields_an_account_adds_are_mapped_when_the_schema_says_how_they_are_named():
    """``custom_fields`` (Salesforce's ``…__c``, HubSpot's own properties):
    mappings may name such fields, their casts checked on each record (their
    type is unknown when saved); a name outside the pattern is still refused,
    and a write of the raw shape sets them."""
    crm = EntitySchema("accounts", "Accounts", (
        EntityField("Id", readonly=True), EntityField("Name"),
        EntityField("properties", type="object", fields=(EntityField("email"),)),
    ), id_field="Id", custom_fields=r"[A-Za-z][A-Za-z0-9_]*__c|properties\.[a-z][a-z0-9_]*")
    mappings = validate_mappings(crm, [
        {"source": "Tier__c", "target": "tier"},
        {"source": "Seats__c", "target": "seats", "transform": "int"},
        {"source": "properties.favourite_colour", "target": "colour"},
        {"source": "properties.email", "target": "email"},
    ])
    mapped = Mapper(crm, mappings)
    record = {"Id": "001", "Name": "Acme", "Tier__c": "Gold", "Seats__c": "12",
              "properties": {"email": "a@acme.example", "favourite_colour": "teal"}}
    assert mapped.to_tenant(record) == {"tier": "Gold", "seats": 12, "colour": "teal", "email": "a@acme.example"}
    assert mapped.to_provider({"tier": "Platinum", "seats": 20}) == {"Tier__c": "Platinum", "Seats__c": 20}
    problems: list = []
    assert mapped.to_tenant({**record, "Seats__c": "many"}, problems)["seats"] is None
    assert [p["field"] for p in problems] == ["seats"]

    for unknown in ("Tier", "properties.Not-A-Name", "Tier__c.inner"):
        with pytest.raises(ValidationFailed) as refused:
            validate_mappings(crm, [{"source": unknown, "target": "x"}])
        assert refused.value.code == "unknown_field", unknown
    assert Mapper(crm, [])._raw({"Name": "Acme", "Tier__c": "Gold"}) == {"Name": "Acme", "Tier__c": "Gold"}
    with pytest.raises(ValidationFailed) as refused:
        Mapper(crm, [])._raw({"Tier": "Gold"})
    assert refused.value.code == "unknown_field"
    with pytest.raises(ValidationFailed):
        validate_mappings(ACCOUNT, [{"source": "Tier__c", "target": "tier"}])  # (a schema without the pattern)


def test_a_custom_fields_pattern_that_is_no_regular_expression_is_a_schema_problem():
    from hub.plugins import schema_problems

    assert schema_problems(EntitySchema("a", "A", custom_fields=r"[A-Za-z]+__c")) == []
    [problem] = schema_problems(EntitySchema("a", "A", custom_fields="(__c"))
    assert "custom_fields" in problem and "not a regular expression" in problem


@pytest.mark.parametrize("currency_field, code", [
    ("first_name.code", "unknown_field"),  # a path into a text field reads nothing
    ("balance_cents", "invalid_mapping"),  # a number holds no currency code
    ("opened", "invalid_mapping"),
    ("nowhere", "unknown_field"),
])
def test_a_currency_field_is_checked_as_a_source_is_and_must_be_text(currency_field, code):
    with pytest.raises(ValidationFailed) as refused:
        mapper({"source": "price", "target": "p", "transform": "decimal_to_cents", "currency_field": currency_field})
    assert refused.value.code == code and "its currency_field" in str(refused.value)
    assert list(refused.value.fields) == ["mappings.0.currency_field"]


def test_a_currency_field_may_name_a_text_field_or_a_path_into_an_open_object():
    for currency_field in ("full_name", "balances.currency"):
        mapper({"source": "price", "target": "p", "transform": "decimal_to_cents", "currency_field": currency_field})


def test_an_amount_default_must_fit_its_currency_including_one_the_provider_counts_otherwise():
    amount = {"source": "balance_cents", "target": "b", "transform": "cents_to_decimal"}
    for currency, default in ((None, "1.234"), ("JPY", "1.5"), ("KWD", "1.2345")):
        with pytest.raises(ValidationFailed) as refused:
            validate_mappings(ACCOUNT, [{**amount, "currency": currency, "default": default}])
        assert refused.value.code == "invalid_mapping" and list(refused.value.fields) == ["mappings.0.default"]
    validate_mappings(ACCOUNT, [{**amount, "currency": "KWD", "default": "1.234"}])
    # A provider counting yen in hundredths (as Stripe counts ISK) takes a default of 1.5 yen.
    validate_mappings(ACCOUNT, [{**amount, "currency": "JPY", "default": "1.5"}], {"JPY": 2})


def test_a_joined_value_with_a_separator_at_an_end_keeps_its_pieces_in_their_fields():
    m = mapper({"source": ["first_name", "last_name"], "target": "name", "transform": "join"})
    held = {"first_name": "Ada", "last_name": "Lovelace"}
    for written in (" Grace Hopper", "Grace Hopper  "):
        assert m.to_provider({"name": written}, current=m.to_tenant(held), raw=held) == {
            "first_name": "Grace", "last_name": "Hopper"}
    assert m.to_provider({"name": " "}) == {"first_name": "", "last_name": ""}


def test_an_amount_in_cents_goes_back_as_text_where_the_provider_holds_the_price_as_text():
    m = mapper({"source": "price", "target": "price_cents", "transform": "decimal_to_cents"})
    assert m.to_provider({"price_cents": 2000}, raw={"price": "19.90"}) == {"price": "20.00"}
    assert m.to_provider({"price_cents": 2000}, raw={"price": 19.9}) == {"price": 20}


def test_a_date_written_into_a_time_keeps_the_held_time_of_day_and_offset():
    schema = EntitySchema("events", "Events", (EntityField("at", type="datetime"),
                                              EntityField("stamp", type="datetime", format="unix")))
    m = Mapper(schema, validate_mappings(schema, [{"source": "at", "target": "on", "transform": "date"},
                                                  {"source": "stamp", "target": "day", "transform": "date"}]))
    held = {"at": "2024-06-01T22:30:00-05:00", "stamp": 1_700_000_000}  # 2023-11-14T22:13:20Z
    assert m.to_tenant(held) == {"on": "2024-06-01", "day": "2023-11-14"}
    sent = m.to_provider({"on": "2024-06-05", "day": "2024-01-02"}, raw=held)
    assert sent == {"at": "2024-06-05T22:30:00-05:00", "stamp": 1_704_233_600}  # 2024-01-02T22:13:20Z
    assert m.to_tenant(sent) == {"on": "2024-06-05", "day": "2024-01-02"}
    # Nothing held: midnight UTC.
    assert m.to_provider({"on": "2024-06-05"}) == {"at": "2024-06-05T00:00:00+00:00"}


@pytest.mark.parametrize("change", [{"balance_cents": "abc"}, {"balance_cents": 12.5}, {"price": {"a": 1}},
                                    {"active": "maybe"}, {"opened": "2024-13-45"}, {"balances": "flat"},
                                    {"first_name": ["Ada"]}])
def test_a_raw_write_is_checked_against_its_fields_declared_type(change):
    with pytest.raises(ValidationFailed) as refused:
        Mapper(ACCOUNT, [])._raw(change, RECORD)
    assert refused.value.code == "invalid_value" and list(refused.value.fields) == list(change)


def test_a_raw_write_takes_what_the_provider_takes_in_each_type():
    taken = {"balance_cents": "12", "price": "19.90", "active": "true", "opened": "2024-03-01",
             "balances": {"available": 3}, "first_name": 7, "count": "8", "full_name": None}
    assert Mapper(ACCOUNT, [])._raw(taken, RECORD) == taken
