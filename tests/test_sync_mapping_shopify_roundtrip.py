"""Values mapped out of Shopify and written back in the mapped shape arrive
(and read back) as written, through the hub's REST API against the fake shop
over loopback."""
from __future__ import annotations

from datetime import datetime

from hub_shopify import testing as fake
from tests.sync_support import shopify_env  # noqa: F401  (fixture)


def test_a_joined_name_written_with_a_leading_space_keeps_its_pieces_in_their_fields(shopify_env):
    """first_name + last_name joined as ``name``. Written " Grace Hopper"
    (a stray leading space, as pasted), the value is cut on its first space:
    first_name "" and last_name "Grace Hopper" go to Shopify, and the name
    reads back "Grace Hopper": the whole name moved into last_name."""
    env = shopify_env
    customer = env.fake.state.store.add_customer({"email": "a@example.com", "first_name": "Ada",
                                                  "last_name": "Lovelace"})
    cid = str(customer["id"])
    env.use("customers", [{"source": "email", "target": "email"},
                          {"source": ["first_name", "last_name"], "target": "name", "transform": "join"}])
    assert env.run()["status"] == "succeeded"
    written = env.put(cid, {"name": " Grace Hopper"})
    assert written.status_code == 200, written.text
    env.wait(written.json()["run_id"])
    held = env.fake.state.store.tables["customers"].get(cid)
    shown = env.get(cid).json()["record"]["data"]["name"]
    assert (held["first_name"], held["last_name"]) != ("", "Grace Hopper"), (
        f"Shopify now holds first_name {held['first_name']!r}, last_name {held['last_name']!r}; "
        f"name reads back {shown!r}")
    assert shown.strip() == "Grace Hopper"


def test_a_price_in_cents_written_back_goes_as_text_like_the_price_shopify_holds(shopify_env):
    """Shopify holds variant prices as text ("19.90"). Through a ``float``
    mapping a change goes back as text ("22.00"); through
    ``decimal_to_cents`` it goes as a JSON number (20), so the raw record
    no longer reads as Shopify's."""
    env = shopify_env
    product = env.fake.state.store.add_product({"title": "Hat", "variants": [{"title": "S", "price": "19.90"},
                                                                            {"title": "M", "price": "21.00"}]})
    pid = str(product["id"])
    env.use("products", [{"source": "variants.0.price", "target": "price_cents", "transform": "decimal_to_cents"},
                         {"source": "variants.1.price", "target": "price_m", "transform": "float"}])
    assert env.run()["status"] == "succeeded"
    written = env.put(pid, {"price_cents": 2000, "price_m": 22})
    assert written.status_code == 200, written.text
    env.wait(written.json()["run_id"])
    variants = env.fake.state.store.tables["products"].get(pid)["variants"]
    assert variants[1]["price"] == "22.00"  # the float cast: text, as Shopify holds it
    assert variants[0]["price"] == "20.00", f"sent {variants[0]['price']!r} (a {type(variants[0]['price']).__name__})"


def test_a_date_written_into_a_time_field_reads_back_as_that_date(shopify_env):
    """``published_at`` (a time, held in the shop's zone, -05:00) mapped
    through ``date``: the mapped date is the date in the held value's own
    zone ("2024-06-01T22:30:00-05:00" reads "2024-06-01"). A new date goes
    back as midnight UTC, which is the evening before in the shop's zone:
    once Shopify answers the time in its zone, as it does, the date reads a
    day early (and the time of day held, 22:30, is gone)."""
    env = shopify_env
    store = env.fake.state.store
    product = store.add_product({"title": "Hat"}, at="2024-06-01T22:30:00-05:00")
    pid = str(product["id"])
    env.use("products", [{"source": "title", "target": "name"},
                         {"source": "published_at", "target": "published_on", "transform": "date"}])
    assert env.run()["status"] == "succeeded"
    assert env.get(pid).json()["record"]["data"]["published_on"] == "2024-06-01"
    written = env.put(pid, {"published_on": "2024-06-05"})
    assert written.status_code == 200, written.text
    env.wait(written.json()["run_id"])
    sent = store.tables["products"].get(pid)["published_at"]
    in_shop_zone = datetime.fromisoformat(sent).astimezone(fake.SHOP_TZ)
    # Shopify answers times in the shop's zone: the same instant, as the shop writes it.
    store.tables["products"].get(pid)["published_at"] = in_shop_zone.isoformat()
    store.tables["products"].get(pid)["updated_at"] = fake.now()
    assert env.run(full_refresh=True)["status"] == "succeeded"
    shown = env.get(pid).json()["record"]["data"]["published_on"]
    assert shown == "2024-06-05", f"hub sent published_at {sent!r} (= {in_shop_zone.isoformat()} in the shop); " \
                                  f"it reads back {shown!r}"
