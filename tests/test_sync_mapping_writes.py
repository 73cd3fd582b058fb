"""Writes through mappings into typed and nested provider fields, through the
API: paths into arrays, far dates, strict numbers, discarding on a pull
config. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest

from hub import hookimpl
from hub.types import EntityField, EntitySchema, NotFound
from tests.conftest import API
from tests.sync_support import Ledger, serving, wait_run


class Typed(Ledger):
    """A ledger with typed and nested fields, noting what it is sent."""

    def __init__(self):
        super().__init__(0)
        self.sent: list[tuple[str, str | None, dict]] = []

    @hookimpl
    def entity_schemas(self):
        fields = (
            EntityField("id", readonly=True), EntityField("name"), EntityField("first_name"),
            EntityField("last_name"), EntityField("amount", type="integer"), EntityField("price", type="money"),
            EntityField("ratio", type="number"), EntityField("active", type="boolean"),
            EntityField("opened", type="date"), EntityField("created", type="integer"),
            EntityField("when", type="datetime"), EntityField("count", type="string"),
            EntityField("balances", type="object"), EntityField("variants", type="array"),
            EntityField("currency"), EntityField("stamp", type="datetime", format="unix"),
            EntityField("kind", create_only=True),
            EntityField("updated_at", type="datetime", readonly=True),
            EntityField("profile", type="object", fields=(EntityField("name"),
                                                          EntityField("score", type="integer", readonly=True))),
            EntityField("lines", type="array", fields=(EntityField("id", readonly=True),
                                                       EntityField("qty", type="integer"),
                                                       EntityField("total", type="money", readonly=True))),
        )
        return [EntitySchema("items", "Items", fields, updated_field="updated_at", supports_create=True,
                             supports_update=True, supports_delete=True, supports_since=True)]

    @hookimpl
    def get_record(self, entity, record_id):
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        return dict(self.items[record_id])

    @hookimpl
    def create_record(self, entity, data, idempotency_key):
        self.sent.append(("create", None, data))
        item_id = f"it_new_{len(self.items)}"
        return dict(self.put(item_id, data))

    @hookimpl
    def update_record(self, entity, record_id, data):
        self.sent.append(("update", record_id, data))
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        return dict(self.put(record_id, data))


@pytest.fixture
def typed(settings):
    provider = Typed()
    with serving(settings, provider) as (app, client, headers):
        yield provider, app, client, headers


class Env:
    """A connection with an ``items`` sync config of the given mappings, through the API."""

    def __init__(self, typed, mappings, direction="both", policy="provider_wins", items=None):
        self.provider, self.app, self.client, self.auth = typed
        for item_id, fields in (items or {}).items():
            self.provider.put(item_id, fields)
        c = self.client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                             headers=self.auth)
        assert c.status_code == 201, c.text
        self.cid = c.json()["connection"]["id"]
        self.configs = f"{API}/connections/{self.cid}/sync-configs"
        r = self.client.post(self.configs, json={"entity": "items", "direction": direction,
                                                 "conflict_policy": policy, "mappings": mappings},
                             headers=self.auth)
        assert r.status_code == 201, r.text
        self.config = r.json()["sync_config"]
        self.config_url = f"{self.configs}/{self.config['id']}"
        self.records = f"{self.config_url}/records"
        if items:
            self.pull()

    def run(self, **body):
        r = self.client.post(f"{API}/connections/{self.cid}/sync", json={"entity": "items", **body},
                             headers=self.auth)
        assert r.status_code == 202, r.text
        return wait_run(self.client, self.auth, self.cid, r.json()["run"]["id"])

    def pull(self):
        run = self.run(direction="pull")
        assert run["status"] == "succeeded", run
        return run

    def wait(self, run_id):
        return wait_run(self.client, self.auth, self.cid, run_id)

    def get(self, rid, mapped=True):
        r = self.client.get(f"{self.records}/{rid}", params={"mapped": mapped}, headers=self.auth)
        return r

    def put(self, rid, data, **kw):
        return self.client.put(f"{self.records}/{rid}", json={"data": data, **kw}, headers=self.auth)

    def post(self, data, **kw):
        return self.client.post(self.records, json={"data": data, **kw}, headers=self.auth)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_path_into_an_array_names_an_existing_item_or_is_refused(typed):
    env = Env(typed, [{"source": "variants.3.price", "target": "p3"}, {"source": "variants.0.price", "target": "p0"}],
              items={"x": {"variants": [{"id": 1, "price": "1"}, {"id": 2, "price": "2"}]}})
    for path in ("variants.price", "variants.-1.price"):
        bad = env.client.put(env.config_url, json={"mappings": [{"source": path, "target": "p"}]}, headers=env.auth)
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_mapping", bad.text
        assert "names an item by its index" in bad.json()["error"]
    beyond = env.put("x", {"p3": "7"})
    assert beyond.status_code == 422 and "has 2 item(s) at the provider" in beyond.json()["error"], beyond.text
    assert beyond.json()["code"] == "invalid_value" and beyond.json()["fields"] == ["variants.3"]
    done = env.put("x", {"p0": "9"})
    assert done.status_code == 200, done.text
    env.wait(done.json()["run_id"])
    assert env.provider.items["x"]["variants"] == [{"id": 1, "price": "9"}, {"id": 2, "price": "2"}]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_pending_change_to_an_item_the_provider_removed_fails_instead_of_replacing_the_array(typed):
    env = Env(typed, [{"source": "variants.1.price", "target": "p1"}], policy="hub_wins",
              items={"x": {"variants": [{"id": 1, "price": "1"}, {"id": 2, "price": "2"}]}})
    assert env.put("x", {"p1": "5"}, sync=False).status_code == 200
    env.provider.put("x", {"variants": [{"id": 1, "price": "1"}]})
    env.run()  # pulls the shorter list, then pushes
    assert env.provider.items["x"]["variants"] == [{"id": 1, "price": "1"}]
    record = env.get("x", mapped=False).json()["record"]
    assert record["push_status"] == "failed" and "there is no variants.1" in record["push_error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_times_beyond_utc_are_mapping_errors_and_refused_writes_not_500s(typed):
    env = Env(typed, [{"source": "when", "target": "wt", "transform": "datetime"}],
              items={"y": {"when": "9999-12-31T23:59:59-12:00"}})
    shown = env.get("y")
    assert shown.status_code == 200 and shown.json()["record"]["mapping_errors"][0]["field"] == "wt"
    assert env.client.get(env.records, params={"mapped": True}, headers=env.auth).status_code == 200
    written = env.put("y", {"wt": "0001-01-01T00:00:00+01:00"}, sync=False)
    assert written.status_code == 422 and written.json()["code"] == "invalid_value", written.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_numbers_are_written_with_ascii_digits_only(typed):
    env = Env(typed, [{"source": "ratio", "target": "r", "transform": "float"},
                      {"source": "amount", "target": "a", "transform": "int"}], items={"x": {"ratio": 1.0, "amount": 1}})
    for field, typo in (("r", "1_0"), ("a", "1_000"), ("a", "\u0661")):
        refused = env.put("x", {field: typo}, sync=False)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_value", (typo, refused.text)
    assert env.put("x", {"r": "2.5e1", "a": "+3"}, sync=False).status_code == 200
    assert env.get("x", mapped=False).json()["record"]["data"] == {"id": "x", "ratio": 25.0, "amount": 3,
                                                                  "updated_at": env.provider.items["x"]["updated_at"]}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_change_made_before_a_config_was_switched_to_pull_can_be_discarded(typed):
    env = Env(typed, [{"source": "name", "target": "n"}], items={"y": {"name": "b"}})
    assert env.client.delete(f"{env.records}/y", params={"sync": False}, headers=env.auth).status_code == 200
    assert env.client.put(env.config_url, json={"direction": "pull"}, headers=env.auth).status_code == 200
    discarded = env.client.post(f"{env.records}/y/discard", headers=env.auth)
    assert discarded.status_code == 200 and discarded.json()["record"]["pending"] is False, discarded.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_two_mappings_of_one_field_changed_to_different_values_are_refused(typed):
    env = Env(typed, [{"source": "amount", "target": "a"},
                      {"source": "amount", "target": "b", "transform": "cents_to_decimal"}], items={"x": {"amount": 100}})
    refused = env.put("x", {"a": 5, "b": 7.0}, sync=False)
    assert refused.status_code == 422 and "both write 'amount'" in refused.json()["error"], refused.text
    assert refused.json()["fields"] == ["a", "b"]
    assert env.put("x", {"a": 700, "b": 7.0}, sync=False).status_code == 200  # the same value twice


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_change_to_a_constant_is_refused_and_read_only_values_are_left_out(typed):
    """A constant goes nowhere: changing it is refused. A read-only provider
    field is left out, so that a record read, then written back whole after a
    pull moved its updated_at, is not refused."""
    env = Env(typed, [{"source": "id", "target": "rid"}, {"source": "name", "target": "n"},
                      {"source": "updated_at", "target": "changed"},
                      {"target": "kind", "transform": "constant", "value": "item"}], items={"x": {"name": "a"}})
    refused = env.put("x", {"kind": "other"}, sync=False)
    assert refused.status_code == 422 and refused.json()["code"] == "read_only_field", refused.text
    whole = env.get("x").json()["record"]["data"]
    env.provider.put("x", {})  # its updated_at moves at the provider
    env.pull()
    written = env.put("x", {**whole, "n": "b"})
    assert written.status_code == 200, written.text
    env.wait(written.json()["run_id"])
    assert env.provider.sent[-1] == ("update", "x", {"name": "b"})
    assert env.put("x", {"rid": "other"}, sync=False).json()["code"] == "empty_change"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_digit_keys_of_an_object_are_keys_and_a_pending_create_keeps_its_items(typed):
    env = Env(typed, [{"source": "variants.0.price", "target": "p0"}, {"source": "balances", "target": "b"},
                      {"source": "name", "target": "n"}], items={"x": {"balances": {"usd": 1}}})
    assert env.put("x", {"b": {"2024": 3}}, sync=False).status_code == 200
    created = env.post({"n": "new", "p0": "1"}, sync=False)
    assert created.status_code == 201, created.text
    edited = env.put(created.json()["record"]["id"], {"p0": "2"}, sync=False)
    assert edited.status_code == 200, edited.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_an_object_with_digit_keys_goes_back_as_an_object_and_a_change_through_an_index_as_a_list(typed):
    """Stripe's metadata may hold keys "0", "1": a change beside them (or to
    one of them) must not send the object back as an array. A create through
    ``variants.0.price`` still sends a list: the field is declared an array."""
    env = Env(typed, [{"source": "balances.available", "target": "avail"}, {"source": "variants.0.price", "target": "p0"},
                      {"source": "name", "target": "n"}],
              items={"x": {"balances": {"available": 1, "buckets": {"0": "a", "1": "b"}}},
                     "y": {"balances": {"0": "first"}}})
    done = env.put("x", {"avail": 2})
    assert done.status_code == 200, done.text
    assert env.wait(done.json()["run_id"])["pushed"] == 1
    assert env.provider.items["x"]["balances"] == {"available": 2, "buckets": {"0": "a", "1": "b"}}
    raw = env.put("y", {"balances": {"0": "second"}}, mapped=False)
    assert raw.status_code == 200, raw.text
    assert env.wait(raw.json()["run_id"])["pushed"] == 1
    assert env.provider.items["y"]["balances"] == {"0": "second"}
    added = env.put("y", {"balances": {"1": "added"}}, mapped=False)  # a digit key more, not an index past a list
    assert added.status_code == 200, added.text
    assert env.wait(added.json()["run_id"])["pushed"] == 1
    assert env.provider.items["y"]["balances"] == {"0": "second", "1": "added"}
    # Created with digit keys in a declared object: sent as an object; through an array index: as a list.
    made = env.post({"name": "new", "balances": {"0": "zero", "1": "one"}}, mapped=False)
    assert made.status_code == 201, made.text
    env.wait(made.json()["run_id"])
    made_id = env.get(made.json()["record"]["id"], mapped=False).json()["record"]["remote_id"]
    assert env.provider.items[made_id]["balances"] == {"0": "zero", "1": "one"}
    listed = env.post({"n": "with item", "p0": "5"})
    assert listed.status_code == 201, listed.text
    env.wait(listed.json()["run_id"])
    listed_id = env.get(listed.json()["record"]["id"], mapped=False).json()["record"]["remote_id"]
    assert env.provider.items[listed_id]["variants"] == [{"price": "5"}]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_an_object_or_array_sent_whole_leaves_out_its_read_only_sub_fields(typed):
    """A change to one sub-field sends the whole object: its read-only
    sub-fields (HubSpot's hs_object_id) went too, and the provider refused
    the push. An array item keeps its id: it says which item is updated."""
    env = Env(typed, [], items={"x": {"profile": {"name": "Ada", "score": 5},
                                      "lines": [{"id": "l1", "qty": 1, "total": "10.00"}]}})
    done = env.put("x", {"profile": {"name": "Grace"}, "lines": {"0": {"qty": 2}}}, mapped=False)
    assert done.status_code == 200, done.text
    assert env.wait(done.json()["run_id"])["pushed"] == 1
    assert env.provider.sent[-1] == ("update", "x", {"profile": {"name": "Grace"}, "lines": [{"id": "l1", "qty": 2}]})
    assert env.get("x", mapped=False).json()["record"]["pending"] is False
    # Written whole (a record read, then written back), the array goes without them too.
    whole = env.put("x", {"lines": [{"id": "l1", "qty": 3, "total": "30.00"}]}, mapped=False)
    assert whole.status_code == 200, whole.text
    assert env.wait(whole.json()["run_id"])["pushed"] == 1
    assert env.provider.sent[-1] == ("update", "x", {"lines": [{"id": "l1", "qty": 3}]})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_split_mappings_default_is_shown_never_pushed(typed):
    env = Env(typed, [{"source": "name", "target": ["first", "last"], "transform": "split", "default": "Unknown"},
                      {"source": "amount", "target": "a", "transform": "int"}], items={"x": {"amount": 1}})
    assert env.get("x").json()["record"]["data"] == {"first": "Unknown", "last": "Unknown", "a": 1}
    done = env.put("x", {"first": "John"})
    assert done.status_code == 200, done.text
    assert env.wait(done.json()["run_id"])["pushed"] == 1
    assert env.provider.items["x"]["name"] == "John"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_joined_fields_are_written_back_in_their_types(typed):
    env = Env(typed, [{"source": ["amount", "currency"], "target": "money", "transform": "join", "separator": " "}],
              items={"x": {"amount": 100, "currency": "usd"}})
    done = env.put("x", {"money": "200 eur"})
    assert done.status_code == 200, done.text
    env.wait(done.json()["run_id"])
    assert (env.provider.items["x"]["amount"], env.provider.items["x"]["currency"]) == (200, "eur")
    # Written back as it is now: nothing to push, and no push run queued for it.
    again = env.put("x", {"money": "200 eur"})
    assert again.status_code == 200 and again.json()["run_id"] is None, again.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_record_kept_after_the_provider_deleted_it_is_created_again_with_its_own_values(typed):
    env = Env(typed, [{"source": "name", "target": "n"},
                      {"source": "count", "target": "c", "transform": "int", "default": -1},
                      {"source": ["first_name", "last_name"], "target": "full", "transform": "join"}],
              policy="review", items={"a": {"name": "a", "count": "many", "first_name": "Mary Ann",
                                            "last_name": "Smith"}})
    env.put("a", {"n": "hub"}, sync=False)
    env.provider.remove("a")
    env.run(direction="both", full_refresh=True)
    [conflict] = env.client.get(f"{env.config_url}/conflicts", headers=env.auth).json()["conflicts"]
    resolved = env.client.post(f"{env.config_url}/conflicts/{conflict['id']}/resolve",
                               json={"resolution": "hub", "sync": False}, headers=env.auth)
    assert resolved.status_code == 200, resolved.text
    env.run(direction="push")
    created = env.provider.sent[-1][2]
    assert created == {"name": "hub", "count": "many", "first_name": "Mary Ann", "last_name": "Smith"}, created


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_amounts_a_json_number_would_round_are_refused_not_shown_a_cent_off(typed):
    env = Env(typed, [{"source": "amount", "target": "amt", "transform": "cents_to_decimal"}],
              items={"x": {"amount": 99999999999999999}, "y": {"amount": 1999}})
    shown = env.get("x").json()["record"]
    assert shown["data"]["amt"] is None and shown["mapping_errors"][0]["field"] == "amt"
    assert env.get("y").json()["record"]["data"]["amt"] == 19.99
    rounded = env.client.put(f"{env.records}/y", content=b'{"data": {"amt": 123456789012345.68}, "sync": false}',
                             headers={**env.auth, "Content-Type": "application/json"})
    assert rounded.status_code == 422 and "send it as text" in rounded.json()["error"], rounded.text
    assert env.put("y", {"amt": "123456789012345.68"}, sync=False).status_code == 200
    assert env.get("y", mapped=False).json()["record"]["data"]["amount"] == 12345678901234568


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_amounts_follow_the_decimals_of_their_currency_both_ways(typed):
    """Yen have no minor unit and Kuwaiti dinars three: ¥500 is 500, not 5.00."""
    env = Env(typed, [{"source": "amount", "target": "a", "transform": "cents_to_decimal",
                       "currency_field": "currency"},
                      {"source": "price", "target": "p", "transform": "cents_to_decimal", "currency": "JPY"},
                      {"source": "currency", "target": "cur"}],
              items={"jp": {"amount": 500, "price": 700, "currency": "jpy"},
                     "kw": {"amount": 1500, "price": 1, "currency": "KWD"},
                     "us": {"amount": 1234, "price": 2, "currency": "usd"},
                     "none": {"amount": 9}})
    shown = {rid: env.get(rid).json()["record"] for rid in ("jp", "kw", "us", "none")}
    assert [shown[rid]["data"]["a"] for rid in ("jp", "kw", "us")] == [500, 1.5, 12.34]
    assert shown["jp"]["data"]["p"] == 700
    assert shown["none"]["data"]["a"] is None
    assert "no currency code in 'currency'" in shown["none"]["mapping_errors"][0]["error"]

    refused = env.put("jp", {"a": 1.5}, sync=False)
    assert refused.status_code == 422 and "the currency has none" in refused.json()["error"], refused.text
    assert env.put("kw", {"a": 1.2345}, sync=False).status_code == 422
    for rid, value, expected in (("jp", 1200, 1200), ("kw", "2.25", 2250), ("us", 0.5, 50)):
        written = env.put(rid, {"a": value})
        assert written.status_code == 200, written.text
        env.wait(written.json()["run_id"])
        assert env.provider.items[rid]["amount"] == expected, rid
    # A change of currency and amount together converts the amount in the new currency.
    both = env.put("us", {"a": 300, "cur": "jpy"})
    assert both.status_code == 200, both.text
    env.wait(both.json()["run_id"])
    assert (env.provider.items["us"]["amount"], env.provider.items["us"]["currency"]) == (300, "jpy")
    created = env.post({"a": 12, "cur": "kwd"})
    assert created.status_code == 201, created.text
    env.wait(created.json()["run_id"])
    assert env.provider.sent[-1] == ("create", None, {"amount": 12000, "currency": "kwd"})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_currency_options_are_checked_when_saved(typed):
    env = Env(typed, [])
    for mapping, needle in (
            ({"source": "name", "target": "n", "currency": "JPY"}, "cents_to_decimal and decimal_to_cents only"),
            ({"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency": "JPY",
              "currency_field": "currency"}, "not both"),
            ({"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency_field": "money"},
             "no field 'money'"),
            ({"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency": "¥¥¥"}, "currency")):
        bad = env.client.put(env.config_url, json={"mappings": [mapping]}, headers=env.auth)
        assert bad.status_code == 422 and needle in bad.json()["error"], (mapping, bad.text)
    for mapping, path in (
            ({"source": "name", "target": "n", "currency": "JPY"}, "mappings.0.currency"),
            ({"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency": "JPY",
              "currency_field": "currency"}, "mappings.0"),
            ({"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency_field": "money"},
             "mappings.0.currency_field")):
        bad = env.client.put(f"{env.config_url}/mappings", json={"mappings": [mapping]}, headers=env.auth)
        assert bad.json()["fields"] == [path] and bad.json()["details"][0]["path"] == path, (mapping, bad.text)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_times_go_back_as_the_provider_holds_them(typed):
    """Epoch milliseconds stay milliseconds; a datetime field the provider
    declares as Unix time gets seconds even on a create."""
    env = Env(typed, [{"source": "created", "target": "c", "transform": "datetime"},
                      {"source": "stamp", "target": "s", "transform": "date"},
                      {"source": "name", "target": "n"}],
              items={"ms": {"created": 1_700_000_000_123}, "sec": {"created": 1_700_000_000}})
    assert env.get("ms").json()["record"]["data"]["c"] == "2023-11-14T22:13:20.123000+00:00"
    for rid, expected in (("ms", 1_767_225_600_500), ("sec", 1_767_225_600)):
        written = env.put(rid, {"c": "2026-01-01T00:00:00.5+00:00"})
        assert written.status_code == 200, written.text
        env.wait(written.json()["run_id"])
        assert env.provider.items[rid]["created"] == expected, rid
    created = env.post({"s": "2026-03-01", "n": "new"})
    assert created.status_code == 201, created.text
    env.wait(created.json()["run_id"])
    assert env.provider.sent[-1] == ("create", None, {"stamp": 1_772_323_200, "name": "new"})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_field_set_at_creation_only_is_refused_in_updates_and_kept_when_written_back(typed):
    env = Env(typed, [], items={"x": {"kind": "a", "name": "n"}})
    refused = env.put("x", {"kind": "b", "name": "m"}, sync=False)
    assert refused.status_code == 422 and refused.json()["code"] == "read_only_field", refused.text
    assert refused.json()["details"] == {"fields": ["kind"]}
    whole = env.get("x", mapped=False).json()["record"]["data"]
    written = env.put("x", {**whole, "name": "m"})
    assert written.status_code == 200, written.text
    env.wait(written.json()["run_id"])
    assert env.provider.sent[-1] == ("update", "x", {"name": "m"})
    created = env.post({"kind": "b", "name": "z"}, sync=False)
    assert created.status_code == 201, created.text
    new_id = created.json()["record"]["id"]
    assert env.put(new_id, {"kind": "c"}).status_code == 200  # not sent yet: still its creation
    env.run(direction="push")
    assert env.provider.sent[-1] == ("create", None, {"kind": "c", "name": "z"})
    assert env.client.put(env.config_url, json={"mappings": [{"source": "kind", "target": "k"}, {
        "source": "name", "target": "n"}]}, headers=env.auth).status_code == 200
    assert env.put("x", {"k": "z"}, sync=False).json()["code"] == "read_only_field"
    assert env.put("x", {"k": "a", "n": "q"}, sync=False).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_field_set_at_creation_only_is_refused_once_the_create_was_sent(typed):
    """What changes after a create went out follows as an update: a
    create-only field cannot be in it."""
    from hub.models import SyncRecord

    env = Env(typed, [])
    created = env.post({"kind": "b", "name": "z"}, sync=False)
    record_id = created.json()["record"]["id"]
    with env.app.state.hub.session() as session:
        row = session.get(SyncRecord, record_id)
        row.push_status = "sending"  # on its way (a hub stopped in the middle, say)
        session.add(row)
        session.commit()
    refused = env.put(record_id, {"kind": "c"}, sync=False)
    assert refused.status_code == 422 and refused.json()["code"] == "read_only_field", refused.text
    assert env.put(record_id, {"kind": "b", "name": "y"}, sync=False).status_code == 200  # kind unchanged


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_fixed_currency_must_be_an_iso_code_or_one_the_provider_declares(typed):
    """A typo (JYP for JPY) was taken, and its amounts given two decimals: 300 yen shown as 3."""
    env = Env(typed, [], items={"x": {"amount": 300}})
    url = f"{env.config_url}/mappings"
    for typo in ("JYP", "XYZ", "zwl"):
        refused = env.client.put(url, json={"mappings": [
            {"source": "name", "target": "n"},
            {"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency": typo}]}, headers=env.auth)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_mapping", refused.text
        body = refused.json()
        assert f"currency {typo!r} is not an active ISO 4217 currency code" in body["error"], body
        assert body["fields"] == ["mappings.1.currency"]
        assert body["details"] == [{"index": 1, "code": "invalid_mapping", "field": "currency",
                                    "message": body["error"].removeprefix("invalid mappings: "),
                                    "path": "mappings.1.currency"}]
    assert env.client.get(url, headers=env.auth).json()["mappings"] == []
    for code in ("ZWG", "XCG", "jpy", "JPY"):
        saved = env.client.put(url, json={"mappings": [
            {"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency": code}]}, headers=env.auth)
        assert saved.status_code == 200, (code, saved.text)
    # Yen have no minor unit: 300 stays 300 (the typo made it 3), both ways.
    assert env.get("x").json()["record"]["data"] == {"a": 300}
    written = env.put("x", {"a": 450})
    assert written.status_code == 200, written.text
    env.wait(written.json()["run_id"])
    assert env.provider.items["x"]["amount"] == 450


class Declaring(Typed):
    """A provider whose API still counts a withdrawn currency, and says so."""

    @hookimpl
    def provider_info(self):
        return dataclasses.replace(super().provider_info(), minor_units={"zwl": 2, "MGA": 0})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_currency_the_provider_declares_is_taken_whatever_its_case(settings):
    provider = Declaring()
    with serving(settings, provider) as (app, client, headers):
        env = Env((provider, app, client, headers), [])
        url = f"{env.config_url}/mappings"
        for code in ("ZWL", "zwl", "mga"):
            saved = client.put(url, json={"mappings": [
                {"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency": code}]},
                headers=headers)
            assert saved.status_code == 200, (code, saved.text)
        refused = client.put(url, json={"mappings": [
            {"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency": "ZWX"}]}, headers=headers)
        assert refused.status_code == 422 and "nor one the provider declares (MGA, ZWL)" in refused.json()["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_writes_refused_name_their_fields(typed):
    """A value that does not convert back, or a field no mapping targets,
    names the tenant's fields at fault in ``fields``."""
    env = Env(typed, [{"source": "price", "target": "balance", "transform": "cents_to_decimal"},
                      {"source": ["name", "amount"], "target": "label", "transform": "join"},
                      {"source": "name", "target": ["first", "rest"], "transform": "split"}],
              items={"x": {"price": 100, "name": "a", "amount": 1}})
    lots = env.put("x", {"balance": "lots"}, sync=False)
    assert lots.status_code == 422 and lots.json()["code"] == "invalid_value", lots.text
    assert "cannot convert back" in lots.json()["error"] and lots.json()["fields"] == ["balance"]
    joined = env.put("x", {"label": "a many"}, sync=False)  # the amount's piece is no integer
    assert joined.status_code == 422 and joined.json()["fields"] == ["label"], joined.text
    unknown = env.put("x", {"balance": 2, "colour": "red", "size": 1}, sync=False)
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_field", unknown.text
    assert unknown.json()["fields"] == ["colour", "size"]
    assert unknown.json()["details"] == {"unknown": ["colour", "size"]}
    raw = env.put("x", {"colour": "red"}, mapped=False, sync=False)
    assert raw.status_code == 422 and raw.json()["code"] == "unknown_field", raw.text
    assert raw.json()["fields"] == ["colour"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_refused_mappings_name_the_request_path_of_each_problem(typed):
    env = Env(typed, [])
    refused = env.client.put(f"{env.config_url}/mappings", json={"mappings": [
        {"source": "amount", "target": "a", "transform": "cents_to_decimal", "currency": "JYP"},
        {"source": "nmae", "target": "n"},
        {"source": "amount", "target": "b", "transform": "int", "default": "many"},
        {"source": "name", "target": "a"},
        {"source": "first_name", "target": "f", "transform": "join"},
        {"source": ["first_name", "lsat_name"], "target": "full", "transform": "join"},
        {"source": "name", "target": ["g", "b"], "transform": "split"},
        {"source": "active", "target": "c", "transform": "cents_to_decimal"},
    ]}, headers=env.auth)
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_mapping", refused.text
    paths = ["mappings.0.currency", "mappings.1.source", "mappings.2.default", "mappings.3.target",
             "mappings.4.source", "mappings.5.source.1", "mappings.6.target.1", "mappings.7.source"]
    assert refused.json()["fields"] == paths
    details = refused.json()["details"]
    assert [p["path"] for p in details] == paths
    assert [(p["index"], p["code"], p["field"]) for p in details] == [
        (0, "invalid_mapping", "currency"), (1, "unknown_field", "nmae"), (2, "invalid_mapping", "default"),
        (3, "invalid_mapping", "a"), (4, "invalid_mapping", None), (5, "unknown_field", "lsat_name"),
        (6, "invalid_mapping", "b"), (7, "impossible_cast", "active")]
    assert all(p["message"].startswith(f"mapping {p['index']}: ") for p in details)
