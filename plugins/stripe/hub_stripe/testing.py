"""A fake Stripe API (v1, API version 2020-08-27) for tests and benchmarks.

``create_app()`` returns a FastAPI app that behaves like Stripe where the hub
depends on it:

- ``Authorization: Bearer sk_test_…`` (or Basic) checked, 401 with Stripe's body;
- every request validated against Stripe's official OpenAPI spec with
  openapi-core (unknown parameters, wrong types, bad bracket encoding, missing
  required parameters answer 400 as Stripe words them); ``validate=False``
  turns this off per app;
- a token bucket (``rate`` per second, ``burst``) answering 429 with a Stripe
  error body and no ``Retry-After``, as Stripe does;
- objects in the spec's shapes, ids like ``cus_…``, lists newest first with
  ``limit``/``starting_after``/``ending_before`` and ``created`` filters;
- ``Idempotency-Key`` replay (same key and parameters replay the first answer;
  other parameters get a 400 ``idempotency_error``);
- customers, payment intents (confirm, cancel), invoice items, invoices
  (finalize), subscriptions, products, prices, charges, payouts, balance,
  balance transactions and webhook endpoints (which return a ``whsec_`` secret);
- every change recorded as a Stripe event in ``app.state.store.events``.

Test helpers: :func:`seed_customers` (fast, no HTTP), :func:`make_event`,
:func:`signed_delivery` and :func:`send_event` (Stripe-signed deliveries with a
chosen timestamp). Counters on ``app.state``: ``requests``, ``rate_limited``
(429s sent), ``limiter`` (``allowed``, ``achieved_rate()``),
``validation_errors``, ``validation_seconds``, ``idempotency_keys``,
``idempotent_replays``, ``stripe_versions``, ``stripe_accounts``, ``calls``,
``lost``.

Amounts and currencies are checked as Stripe checks them, with its
``invalid_request_error`` bodies naming the ``param``: payouts, charges and
payment intents need a positive integer amount (charges and payment intents at
least the currency's minimum charge, 50 cents for usd: ``amount_too_small``),
and every currency must be one Stripe supports (``invalid currency``).

Fault knob: ``app.state.lose_next`` (default 0: no effect). While it is above
zero, each POST answered 2xx (applied, or replayed from its
``Idempotency-Key``) counts it down and its answer is lost: the client gets a
502 ``api_error`` although the write was applied (and its idempotency key
saved, so a re-send with the same key replays the first answer), as with a
connection cut after the request went through. ``app.state.in_progress_next``
(default 0): while above zero, each POST with an ``Idempotency-Key`` counts
it down and is answered as Stripe answers a key whose first request is still
executing: 409 ``idempotency_error`` with ``Stripe-Should-Retry: true``,
nothing applied.

Run it alone: ``python -m hub_stripe.testing [--port 12111] [--customers N]
[--rate 25] [--no-validate]``, then ``HUB_STRIPE_ORIGIN=http://127.0.0.1:12111``.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import string
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from hub.testing.fakes import TokenBucketLimit
from hub_stripe import STRIPE_VERSION, sign
from hub_stripe.spec import FORM, RequestChecker, Route, StripeError, blank, decode_form, find_route, load_spec, schema

API_KEY = "sk_test_hubfake4242"
ALPHABET = string.ascii_letters + string.digits
DAY = 86400

# resource -> (id prefix, object name)
RESOURCES = {
    "customers": ("cus", "customer"),
    "payment_intents": ("pi", "payment_intent"),
    "invoiceitems": ("ii", "invoiceitem"),
    "invoices": ("in", "invoice"),
    "subscriptions": ("sub", "subscription"),
    "products": ("prod", "product"),
    "prices": ("price", "price"),
    "charges": ("ch", "charge"),
    "payouts": ("po", "payout"),
    "balance_transactions": ("txn", "balance_transaction"),
    "webhook_endpoints": ("we", "webhook_endpoint"),
}
EVENT_PREFIX = {"subscription": "customer.subscription"}
DELETABLE = {"customers", "invoiceitems", "invoices", "subscriptions", "products", "webhook_endpoints"}
# Parameters that are not copied onto the object as they are.
SPECIAL = {"expand", "metadata", "items", "recurring", "source", "product_data", "confirm", "payment_method_data",
           "customer"}
DECLINED = {"pm_card_chargeDeclined", "pm_card_visa_chargeDeclined", "tok_chargeDeclined"}
#: The currencies Stripe supports (https://stripe.com/docs/currencies).
CURRENCIES = frozenset("""
usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bif bmd bnd bob brl bsd bwp byn bzd cad cdf chf
clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd hkd hnl htg huf idr
ils inr isk jmd jpy kes kgs khr kmf krw kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk
mxn myr mzn nad ngn nio nok npr nzd pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp
sle sos srd std szl thb tjs top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw
""".split())
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
#: Minimum charge amounts in the currency's smallest unit (Stripe's table); 50 for the others.
MINIMUM_CHARGE = {"usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50, "czk": 1500,
                  "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50, "jpy": 50, "mxn": 1000,
                  "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000}


class Store:
    """The fake account's data. Lists are served newest first."""

    def __init__(self, seed: int = 0, available: int = 0, account_id: str = "acct_1Fake"):
        #: The account whose data this is (``GET /v1/account`` answers it).
        self.id = account_id
        self.rng = random.Random(seed)
        self.rows: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in RESOURCES}
        self.seq: dict[str, int] = {}
        self._order: dict[str, tuple[list[dict[str, Any]], dict[str, int]] | None] = {}
        self.deleted_customers: set[str] = set()
        #: The token each customer's default card was made from (``tok_chargeDeclined`` declines).
        self.cards: dict[str, str] = {}
        self.webhook_secrets: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self.idempotency: dict[str, tuple[tuple, int, dict[str, Any]]] = {}
        self.available = {"usd": available}
        self.pending = {"usd": 0}
        self.account: str | None = None

    def new_id(self, prefix: str, length: int = 14) -> str:
        while True:
            candidate = f"{prefix}_{''.join(self.rng.choices(ALPHABET, k=length))}"
            if candidate not in self.seq:
                return candidate

    def insert(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.seq[obj["id"]] = len(self.seq)
        self.rows[resource][obj["id"]] = obj
        self._order[resource] = None
        return obj

    def remove(self, resource: str, record_id: str) -> None:
        self.rows[resource].pop(record_id, None)
        self._order[resource] = None

    def ordered(self, resource: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
        cached = self._order.get(resource)
        if cached is None:
            rows = sorted(self.rows[resource].values(), reverse=True,
                          key=lambda r: (r.get("created") or r["date"], self.seq[r["id"]]))
            cached = self._order[resource] = (rows, {r["id"]: i for i, r in enumerate(rows)})
        return cached

    def get(self, resource: str, record_id: str, param: str = "id") -> dict[str, Any]:
        obj = self.rows[resource].get(record_id)
        if obj is None:
            raise missing(RESOURCES[resource][1], record_id, param)
        return obj

    def emit(self, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        prefix = EVENT_PREFIX.get(obj["object"], obj["object"])
        event = make_event(f"{prefix}.{kind}", obj, account=self.account, event_id=self.new_id("evt", 24),
                           previous_attributes=previous)
        event["pending_webhooks"] = len(self.rows["webhook_endpoints"])
        self.events.append(event)
        return event


def missing(object_name: str, record_id: str, param: str = "id") -> StripeError:
    """Stripe's answer for an unknown id: 404 in the URL, 400 in a parameter."""
    return StripeError(404 if param == "id" else 400, f"No such {object_name}: '{record_id}'",
                       code="resource_missing", param=param)


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------- the app


def create_app(*, api_key: str = API_KEY, rate: float = 25, burst: int | None = None, tolerance: float = 0.0,
               validate: bool = True, customers: int = 0, available: int = 0, random_seed: int = 0,
               account_id: str = "acct_1Fake", keys: dict[str, str] | None = None) -> FastAPI:
    """The fake Stripe API.

    ``api_key`` reaches the account ``account_id``, whose data is
    ``app.state.store``. ``keys`` are more API keys, each with the account it
    reaches: ``account_id`` (a rolled key of the same account) or another,
    which has data of its own (``app.state.stores[account]``, empty at first).

    :param rate: requests per second the token bucket of each account allows
        (Stripe test mode: 25); ``app.state.limiters`` has them by account,
        ``app.state.limiter`` the main account's.
    :param burst: the bucket's size (default: ``rate``).
    :param tolerance: fraction of a request the bucket may overflow by before
        refusing, absorbing the loopback timing jitter between the hub's
        limiter and this one; 0 for an exact bucket.
    :param validate: validate every request against the OpenAPI spec.
    :param customers: customers to seed.
    :param available: the available USD balance in cents (payouts draw on it).
    :param random_seed: seeds the ids the fake makes up.
    """
    app = FastAPI(title="Fake Stripe API")
    state = app.state
    state.api_key = api_key
    state.validate = validate
    state.store = Store(seed=random_seed, available=available, account_id=account_id)
    state.keys = {api_key: account_id, **(keys or {})}
    state.stores = {account_id: state.store}
    for other in dict.fromkeys(state.keys.values()):
        state.stores.setdefault(other, Store(seed=random_seed + len(state.stores), account_id=other))
    state.checker = RequestChecker() if validate else None
    load_spec()
    # Stripe limits each account: a bucket per account, the main account's as state.limiter.
    state.bucket_size, state.rate = (burst or max(1, int(rate))) + tolerance, rate
    state.limiter = TokenBucketLimit(capacity=state.bucket_size, leak_per_second=rate)
    state.limiters = {account_id: state.limiter}
    state.requests = 0
    state.rate_limited = 0
    state.validation_errors = 0
    state.validation_seconds = 0.0
    state.idempotency_keys = []
    state.idempotent_replays = 0
    state.stripe_versions = Counter()
    state.stripe_accounts = Counter()
    state.calls = Counter()
    state.last_error = None
    state.lose_next = state.lost = 0  # the fault knob (module docstring) and its count
    state.in_progress_next = 0  # the other fault knob: keys still in use by a first request
    # Resources the key may not touch, as a restricted key (rk_) without their permission: 403.
    state.forbidden: set[str] = set()
    if customers:
        seed_customers(app, customers)

    @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
    async def stripe(request: Request):
        body = await request.body()
        status, payload, headers = handle(app, request.method, request.url.path, request.url.query, body,
                                          request.headers)
        return Response(orjson.dumps(payload), status_code=status, headers=headers, media_type="application/json")

    return app


def handle(app: FastAPI, method: str, path: str, query: str, body: bytes,
           headers: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request through authentication, rate limit, validation, idempotency
    and the handler; returns ``(status, body, headers)``."""
    state, store = app.state, app.state.store
    state.requests += 1
    out = {"Request-Id": "req_" + "".join(store.rng.choices(ALPHABET, k=14)), "Stripe-Version": STRIPE_VERSION}
    key = headers.get("idempotency-key") if method == "POST" else None
    try:
        store = state.stores[_authenticate(state, headers.get("authorization", ""))]
        resource = path.removeprefix("/v1/").split("/")[0]
        if resource in state.forbidden:
            raise StripeError(403, f"The provided key 'rk_test_***{state.api_key[-4:]}' does not have the required "
                                   f"permissions for this endpoint on account '{store.id}'. Having the "
                                   f"'rak_{resource}_read' permission would allow this request to continue.")
        limiter = state.limiters.get(store.id)
        if limiter is None:
            limiter = state.limiters[store.id] = TokenBucketLimit(capacity=state.bucket_size,
                                                                  leak_per_second=state.rate)
        if not limiter.hit().allowed:
            state.rate_limited += 1
            out["Stripe-Rate-Limited-Reason"] = "global-rate"
            raise StripeError(429, "Too many requests hit the API too quickly. We recommend an exponential "
                                   "backoff of your requests.", code="rate_limit")
        version = headers.get("stripe-version")
        if version:
            state.stripe_versions[version] += 1
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", version):
                raise StripeError(400, f"Invalid Stripe API version: {version}")
        store.account = headers.get("stripe-account")
        if store.account:
            state.stripe_accounts[store.account] += 1
        if method == "GET" and path == "/v1/account":  # (not in the spec's subset: checked here)
            state.calls["GET /v1/account"] += 1
            return 200, _account(store, parse_qsl(query, keep_blank_values=True)), out
        found = find_route(method, path)
        if found is None:
            raise StripeError(404, f"Unrecognized request URL ({method}: {path}). Please see "
                                   "https://stripe.com/docs or we can help at https://support.stripe.com/.")
        route, args = found
        state.calls[f"{method} {route.template}"] += 1
        content_type = headers.get("content-type", "")
        if body and not content_type.startswith(FORM):
            raise StripeError(400, f"Invalid request: unsupported Content-Type {content_type}. "
                                   f"Stripe accepts {FORM} bodies.")
        try:
            query_pairs = parse_qsl(query, keep_blank_values=True)
            body_pairs = parse_qsl(body.decode(), keep_blank_values=True) if body else []
        except UnicodeDecodeError:
            raise StripeError(400, "Invalid request: the body is not UTF-8 form data.") from None
        params = _params(state, route, path, query_pairs, body_pairs, body, headers)
        if key is not None:
            state.idempotency_keys.append(key)
            if state.in_progress_next > 0:
                state.in_progress_next -= 1
                out["Stripe-Should-Retry"] = "true"
                raise StripeError(409, "There is currently another in-progress request using this Idempotent Key "
                                       "(that probably means you submitted twice, and the other request is still "
                                       "going through): " + key + ". Please try again later.",
                                  type="idempotency_error")
            replay = _replay(store, key, (method, path, tuple(sorted(body_pairs))))
            if replay is not None:
                state.idempotent_replays += 1
                _lose_answer(state, method, replay[0])
                return replay[0], replay[1], {**out, "Idempotent-Replayed": "true", "Idempotency-Key": key}
        try:
            status, payload = 200, dispatch(store, route, args, params)
        except StripeError as exc:
            if key is None:
                raise
            # Stripe saves the result of a request that started executing, errors too.
            status, payload = exc.status, exc.body()
        if key is not None:
            store.idempotency[key] = ((method, path, tuple(sorted(body_pairs))), status, copy.deepcopy(payload))
            out["Idempotency-Key"] = key
        _lose_answer(state, method, status)
        return status, payload, out
    except StripeError as exc:
        state.last_error = exc.error
        return exc.status, exc.body(), out


def _lose_answer(state: Any, method: str, status: int) -> None:
    """The fault knob: lose the answer of an applied POST while ``lose_next`` lasts."""
    if method == "POST" and state.lose_next > 0 and 200 <= status < 300:
        state.lose_next -= 1
        state.lost += 1
        raise StripeError(502, "The answer to this request was lost on its way back (fake Stripe's lose_next): "
                               "it was applied.", type="api_error")


def _authenticate(state: Any, authorization: str) -> str:
    """The account the request's key reaches (a 401 for none)."""
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            credential = base64.b64decode(credential).decode().partition(":")[0]
        except ValueError:
            credential = ""
    elif scheme.lower() != "bearer":
        credential = ""
    if not credential:
        raise StripeError(401, "You did not provide an API key. You need to provide your API key in the "
                               "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                               "YOUR_SECRET_KEY').")
    if credential not in state.keys:
        raise StripeError(401, f"Invalid API Key provided: {credential[:8]}{'*' * 12}{credential[-4:]}")
    return state.keys[credential]


def _params(state: Any, route: Route, path: str, query: list, body: list, raw: bytes, headers: Any) -> dict:
    if not state.validate:
        return decode_form(query + body)
    started = time.perf_counter()
    try:
        typed_query, typed_body = state.checker.check(route, path, query, body, raw, dict(headers))
    except StripeError:
        state.validation_errors += 1
        raise
    finally:
        state.validation_seconds += time.perf_counter() - started
    return {**typed_query, **typed_body}


def _replay(store: Store, key: str, fingerprint: tuple) -> tuple[int, dict[str, Any]] | None:
    if len(key) > 255:
        raise StripeError(400, "Idempotency-Key is too long: it must be at most 255 characters.",
                          type="idempotency_error")
    stored = store.idempotency.get(key)
    if stored is None:
        return None
    if stored[0] != fingerprint:
        raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters they were "
                               f"first used with. Try using a key other than '{key}' if you meant to execute a "
                               "different request.", type="idempotency_error")
    return stored[1], copy.deepcopy(stored[2])


# ---------------------------------------------------------------- dispatch


def dispatch(store: Store, route: Route, args: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    parts = route.template.split("/")
    resource = parts[2]
    if route.template == "/v1/balance":
        return _balance(store)
    if resource not in RESOURCES or len(parts) > 5:
        raise StripeError(404, f"Unrecognized request URL ({route.method}: {route.template}): hub's fake Stripe "
                               "does not implement it.")
    if len(parts) == 3:
        if route.method == "GET":
            return list_objects(store, resource, params)
        return CREATE.get(resource, _create_plain)(store, resource, params)
    if len(parts) == 4:
        if route.method == "GET":
            return retrieve(store, resource, args[0])
        if route.method == "DELETE" and resource in DELETABLE:
            return DELETE.get(resource, _delete_plain)(store, resource, args[0])
        if route.method == "POST" and resource != "balance_transactions":
            return update(store, resource, args[0], params)
    action = ACTIONS.get((resource, parts[-1]))
    if action is None:
        raise StripeError(404, f"Unrecognized request URL ({route.method}: {route.template}): hub's fake Stripe "
                               "does not implement it.")
    return action(store, store.get(resource, args[0]), params)


def list_objects(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    limit = _int(params.get("limit", 10), "limit")
    if not 1 <= limit <= 100:
        raise StripeError(400, "Invalid limit: must be between 1 and 100", code="parameter_invalid_integer",
                          param="limit")
    full, index = store.ordered(resource)
    rows = full
    filters = {k: v for k, v in params.items()
               if k not in ("limit", "starting_after", "ending_before", "created", "expand")}
    if resource == "subscriptions" and filters.get("status") == "all":  # Stripe's way to include canceled ones
        filters.pop("status")
    if params.get("created") not in (None, ""):
        rows = [r for r in rows if _created_matches(r.get("created") or r["date"], params["created"])]
    if filters:
        rows = [r for r in rows if all(_filter_matches(resource, r, k, v) for k, v in filters.items())]
    if resource == "subscriptions" and "status" not in params:
        rows = [r for r in rows if r["status"] != "canceled"]
    cursor = params.get("starting_after") or params.get("ending_before")
    if cursor:
        after = bool(params.get("starting_after"))
        if cursor not in index:
            raise missing(RESOURCES[resource][1], cursor, "starting_after" if after else "ending_before")
        position = index[cursor]
        if after:
            # The page and one more (to tell has_more), not the rest of the list: a long pull stays linear.
            rows = (full[position + 1:position + limit + 2] if rows is full
                    else [r for r in rows if index[r["id"]] > position])
        else:
            rows = rows[:position] if rows is full else [r for r in rows if index[r["id"]] < position]
            return _list(resource, rows[-limit:], len(rows) > limit)
    return _list(resource, rows[:limit], len(rows) > limit)


def _list(resource: str, page: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    if resource == "webhook_endpoints":
        page = [{k: v for k, v in r.items() if k != "secret"} for r in page]
    return {"object": "list", "data": page, "has_more": more, "url": f"/v1/{resource}"}


def _filter_matches(resource: str, obj: dict[str, Any], name: str, wanted: Any) -> bool:
    """A list filter as Stripe applies it: equal values (case-sensitive, as
    Stripe documents ``email``); a filter the fake does not know is refused,
    not ignored, so that no test passes on an unfiltered list."""
    if resource == "subscriptions" and name == "price":
        return any(item["price"]["id"] == wanted for item in obj["items"]["data"])
    if name not in obj or isinstance(wanted, (dict, list)):
        raise StripeError(400, f"hub's fake Stripe does not implement the {name} filter of /v1/{resource}.",
                          param=name)
    return _filter_text(obj[name]) == _filter_text(wanted)


def _filter_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _created_matches(created: int, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return created == _int(condition, "created")
    checks = {"gt": created.__gt__, "gte": created.__ge__, "lt": created.__lt__, "lte": created.__le__}
    return all(checks[op](_int(value, f"created[{op}]")) for op, value in condition.items() if op in checks)


def retrieve(store: Store, resource: str, record_id: str) -> dict[str, Any]:
    if resource == "customers" and record_id in store.deleted_customers:
        return {"id": record_id, "object": "customer", "deleted": True}
    obj = store.get(resource, record_id)
    if resource == "webhook_endpoints":
        return {k: v for k, v in obj.items() if k != "secret"}
    return obj


def new_object(store: Store, resource: str, params: dict[str, Any], **values: Any) -> dict[str, Any]:
    prefix, object_name = RESOURCES[resource]
    obj = blank(object_name)
    obj["id"] = store.new_id(prefix)
    obj["date" if object_name == "invoiceitem" else "created"] = now()
    _assign(obj, params)
    if "metadata" in obj:
        obj["metadata"] = _metadata({}, params.get("metadata"))
    obj.update(values)
    return obj


def _assign(obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    _refuse_unsetting(obj["object"], params)
    previous = {}
    for key, value in params.items():
        if key in obj and key not in SPECIAL and key not in ("id", "object", "created", "livemode"):
            previous[key] = obj[key]
            obj[key] = _unset_blanks(value)
    return previous


def _refuse_unsetting(object_name: str, params: dict[str, Any]) -> None:
    """Stripe refuses ``""`` (its "unset") for a field that cannot be null."""
    properties = schema(object_name)["properties"]
    for key, value in params.items():
        prop = properties.get(key)
        if value == "" and key not in SPECIAL and prop is not None and not prop.get("nullable") \
                and prop.get("type") in ("string", "integer", "boolean"):
            raise StripeError(400, f"You passed an empty string for '{key}'. We assume empty values are an attempt "
                                   f"to unset a parameter; however '{key}' cannot be unset. You should remove "
                                   f"'{key}' from your request or supply a non-empty value.",
                              code="parameter_invalid_empty", param=key)


def _unset_blanks(value: Any) -> Any:
    """Stripe unsets a field sent empty (``address[line2]=``): null, at any depth."""
    if value == "":
        return None
    if isinstance(value, dict):
        return {key: _unset_blanks(item) for key, item in value.items()}
    return value


def _metadata(current: dict[str, str], change: Any) -> dict[str, str]:
    if change is None:
        return current
    if change == "":
        return {}
    merged = {**current, **change}
    return {k: str(v) for k, v in merged.items() if v != ""}


def update(store: Store, resource: str, record_id: str, params: dict[str, Any]) -> dict[str, Any]:
    obj = store.get(resource, record_id)
    if resource == "customers" and params.get("source"):  # a token becomes the default card
        obj["default_source"] = store.new_id("card", 24)
        store.cards[obj["default_source"]] = params["source"]
    if resource == "subscriptions" and params.get("items") not in (None, ""):
        items = _updated_items(store, obj, params["items"])  # checked before anything changes
        previous = _assign(obj, params)
        previous["items"] = copy.deepcopy(obj["items"])
        obj["items"]["data"] = items
    else:
        previous = _assign(obj, params)
    if "metadata" in params and "metadata" in obj:
        previous["metadata"] = obj["metadata"]
        obj["metadata"] = _metadata(obj["metadata"], params["metadata"])
    if "updated" in obj:
        obj["updated"] = now()
    store.emit("updated", obj, previous)
    return retrieve(store, resource, record_id)


def _create_plain(store: Store, resource: str, params: dict[str, Any], **values: Any) -> dict[str, Any]:
    obj = store.insert(resource, new_object(store, resource, params, **values))
    store.emit("created", obj)
    return obj


def _delete_plain(store: Store, resource: str, record_id: str) -> dict[str, Any]:
    obj = store.get(resource, record_id)
    store.remove(resource, record_id)
    store.emit("deleted", obj)
    return {"id": record_id, "object": obj["object"], "deleted": True}


# ---------------------------------------------------------------- resources


def _create_customer(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    prefix = params.get("invoice_prefix") or "".join(store.rng.choices("0123456789ABCDEF", k=8))
    card = None
    if params.get("source"):  # a token (tok_visa) becomes the customer's default card
        card = store.new_id("card", 24)
        store.cards[card] = params["source"]
    return _create_plain(store, resource, params, invoice_prefix=prefix, tax_exempt=params.get("tax_exempt", "none"),
                         next_invoice_sequence=params.get("next_invoice_sequence", 1), delinquent=False,
                         preferred_locales=params.get("preferred_locales", []), default_source=card)


def _delete_customer(store: Store, resource: str, record_id: str) -> dict[str, Any]:
    deleted = _delete_plain(store, resource, record_id)
    store.deleted_customers.add(record_id)
    return deleted


def _customer(store: Store, params: dict[str, Any], required: bool = True) -> str | None:
    customer = params.get("customer")
    if not customer:
        if required:
            raise StripeError(400, "Missing required param: customer.", code="parameter_missing", param="customer")
        return None
    if customer not in store.rows["customers"]:
        raise missing("customer", customer, "customer")
    return customer


def _create_product(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    created = now()
    values = {"id": params["id"]} if params.get("id") else {}
    return _create_plain(store, resource, params, active=params.get("active", True), updated=created,
                         images=params.get("images", []), **values)


def _delete_product(store: Store, resource: str, record_id: str) -> dict[str, Any]:
    store.get(resource, record_id)
    if any(p["product"] == record_id for p in store.rows["prices"].values()):
        raise StripeError(400, "This product cannot be deleted because it has one or more user-created prices.")
    return _delete_plain(store, resource, record_id)


def _create_price(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    product = params.get("product")
    if params.get("product_data"):
        product = _create_product(store, "products", params["product_data"])["id"]
    elif not product:
        raise StripeError(400, "Missing required param: product.", code="parameter_missing", param="product")
    elif product not in store.rows["products"]:
        raise missing("product", product, "product")
    if params.get("unit_amount") is None and params.get("unit_amount_decimal") is None:
        raise StripeError(400, "Missing required param: unit_amount.", code="parameter_missing", param="unit_amount")
    currency = _currency(params)
    amount = _int(params.get("unit_amount", params.get("unit_amount_decimal")), "unit_amount")
    if amount < 0:
        raise StripeError(400, "Invalid non-negative integer", code="parameter_invalid_integer", param="unit_amount")
    recurring = params.get("recurring") or None
    if recurring:
        recurring = {**blank("recurring"), "interval": recurring["interval"],
                     "interval_count": _int(recurring.get("interval_count", 1), "interval_count"),
                     "usage_type": recurring.get("usage_type", "licensed")}
    return _create_plain(store, resource, params, product=product, currency=currency, unit_amount=amount,
                         unit_amount_decimal=str(amount), recurring=recurring, active=params.get("active", True),
                         type="recurring" if recurring else "one_time", billing_scheme="per_unit",
                         tax_behavior=params.get("tax_behavior", "unspecified"))


def _create_payment_intent(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    _customer(store, params, required=False)
    if params.get("amount") in (None, ""):
        raise StripeError(400, "Missing required param: amount.", code="parameter_missing", param="amount")
    currency = _currency(params)
    amount = _chargeable(params["amount"], currency)
    intent = new_object(store, resource, params, amount=amount, currency=currency,
                        customer=params.get("customer"), payment_method_types=params.get("payment_method_types",
                                                                                          ["card"]))
    intent.update(status="requires_confirmation" if intent["payment_method"] else "requires_payment_method",
                  client_secret=f"{intent['id']}_secret_{store.new_id('x', 24)[2:]}",
                  charges={"object": "list", "data": [], "has_more": False,
                           "url": f"/v1/charges?payment_intent={intent['id']}"})
    store.insert(resource, intent)
    store.emit("created", intent)
    if _bool(params.get("confirm")):
        return _confirm_payment_intent(store, intent, {})
    return intent


def _confirm_payment_intent(store: Store, intent: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    if intent["status"] not in ("requires_payment_method", "requires_confirmation", "requires_action"):
        raise StripeError(400, f"You cannot confirm this PaymentIntent because it has a status of "
                               f"{intent['status']}. Only a PaymentIntent with one of the following statuses may be "
                               "confirmed: requires_confirmation, requires_action, requires_payment_method.",
                          code="payment_intent_unexpected_state")
    method = params.get("payment_method") or intent["payment_method"]
    if not method:
        raise StripeError(400, "You cannot confirm this PaymentIntent because it's missing a payment method. "
                               "Update the PaymentIntent with a payment method and then confirm it again.",
                          code="payment_intent_unexpected_state", param="payment_method")
    if not method.startswith(("pm_card_", "pm_")):
        raise missing("payment_method", method, "payment_method")
    intent["payment_method"] = method
    if method in DECLINED:
        intent["status"] = "requires_payment_method"
        error = {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                 "message": "Your card was declined."}
        intent["last_payment_error"] = {**blank("api_errors"), **error}
        store.emit("payment_failed", intent)
        raise StripeError(402, "Your card was declined.", type="card_error", code="card_declined",
                          decline_code="generic_decline")
    charge = _charge(store, intent["amount"], intent["currency"], intent["customer"], payment_intent=intent["id"],
                     payment_method=method, description=intent["description"])
    intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None)
    intent["charges"]["data"] = [charge]
    store.emit("succeeded", intent)
    return intent


def _cancel_payment_intent(store: Store, intent: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    if intent["status"] in ("succeeded", "canceled"):
        raise StripeError(400, f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}.",
                          code="payment_intent_unexpected_state")
    intent.update(status="canceled", canceled_at=now(), cancellation_reason=params.get("cancellation_reason"))
    store.emit("canceled", intent)
    return intent


def _charge(store: Store, amount: int, currency: str, customer: str | None, **values: Any) -> dict[str, Any]:
    charge_id = store.new_id("ch", 24)
    txn = _balance_transaction(store, amount, currency, "charge", charge_id, fee=round(amount * 0.029) + 30)
    charge = new_object(store, "charges", {}, id=charge_id, amount=amount, amount_captured=amount, currency=currency,
                        customer=customer, paid=True, captured=True, status="succeeded",
                        balance_transaction=txn["id"],
                        refunds={"object": "list", "data": [], "has_more": False,
                                 "url": f"/v1/charges/{charge_id}/refunds"},
                        **values)
    store.insert("charges", charge)
    store.emit("succeeded", charge)
    return charge


def _create_charge(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    for name in ("amount", "currency"):
        if params.get(name) in (None, ""):
            raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    customer = _customer(store, params, required=False)
    source = params.get("source")
    if not source and not customer:
        raise StripeError(400, "Must provide source or customer.", code="parameter_missing", param="source")
    if not source:
        card = store.rows["customers"][customer].get("default_source")
        if not card:
            raise StripeError(402, "Cannot charge a customer that has no active card", type="card_error",
                              code="missing", param="card")
        source = store.cards.get(card)
    if source in DECLINED:
        raise StripeError(402, "Your card was declined.", type="card_error", code="card_declined",
                          decline_code="generic_decline")
    known = {k: v for k, v in params.items() if k in ("description", "receipt_email", "statement_descriptor",
                                                       "transfer_group", "shipping")}
    currency = _currency(params)
    charge = _charge(store, _chargeable(params["amount"], currency), currency, customer, **known)
    charge["metadata"] = _metadata({}, params.get("metadata"))
    return charge


def _balance_transaction(store: Store, amount: int, currency: str, kind: str, source: str,
                         fee: int = 0) -> dict[str, Any]:
    created = now()
    fee_details = [{"amount": fee, "application": None, "currency": currency,
                    "description": "Stripe processing fees", "type": "stripe_fee"}] if fee else []
    pending = kind == "charge"
    txn = new_object(store, "balance_transactions", {}, amount=amount, currency=currency, fee=fee, net=amount - fee,
                     fee_details=fee_details, type=kind, reporting_category=kind, source=source,
                     status="pending" if pending else "available",
                     available_on=created + (2 * DAY if pending else 0), description=None)
    bucket = store.pending if pending else store.available
    bucket[currency] = bucket.get(currency, 0) + amount - fee
    return store.insert("balance_transactions", txn)


def _create_payout(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    currency = _currency(params)
    amount = _positive(params["amount"])
    if store.available.get(currency, 0) < amount:
        raise StripeError(400, "You have insufficient funds in your Stripe account. One likely reason you have "
                               "insufficient funds is that your funds are automatically being paid out; try enabling "
                               "manual payouts by going to https://dashboard.stripe.com/account/payouts.",
                          code="balance_insufficient")
    payout_id = store.new_id("po", 24)
    txn = _balance_transaction(store, -amount, currency, "payout", payout_id)
    return _create_plain(store, resource, params, id=payout_id, amount=amount, currency=currency,
                         balance_transaction=txn["id"],
                         arrival_date=now() + 2 * DAY, automatic=False, method=params.get("method", "standard"),
                         source_type=params.get("source_type", "card"), status="pending", type="bank_account",
                         destination=f"ba_{store.new_id('x', 24)[2:]}")


def _create_invoiceitem(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    customer = _customer(store, params)
    quantity = _int(params.get("quantity", 1), "quantity")
    price = None
    if params.get("price"):
        price = store.get("prices", params["price"], "price")
        unit, currency = price["unit_amount"], price["currency"]
    else:
        for name in ("amount", "currency"):
            if params.get(name) in (None, "") and not (name == "amount" and params.get("unit_amount") is not None):
                raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        currency = _currency(params)
        unit = _int(params["unit_amount"], "unit_amount") if params.get("unit_amount") is not None else None
    amount = unit * quantity if unit is not None else _int(params["amount"], "amount")
    created = now()
    return _create_plain(store, resource, params, customer=customer, amount=amount, currency=currency,
                         quantity=quantity, unit_amount=unit, unit_amount_decimal=None if unit is None else str(unit),
                         price=price, period={"start": created, "end": created},
                         discountable=params.get("discountable", True))


def _create_invoice(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    customer = store.rows["customers"][_customer(store, params)]
    pending = [i for i in store.ordered("invoiceitems")[0] if i["customer"] == customer["id"] and not i["invoice"]]
    if not pending and not params.get("subscription"):
        raise StripeError(400, f"Nothing to invoice for customer {customer['id']}.",
                          code="invoice_no_customer_line_items")
    invoice_id = store.new_id("in", 24)
    lines = []
    for item in pending:
        item["invoice"] = invoice_id
        line = blank("line_item")
        line.update(id=store.new_id("il", 24), amount=item["amount"], currency=item["currency"],
                    description=item["description"], invoice_item=item["id"], period=item["period"],
                    price=item["price"], quantity=item["quantity"], type="invoiceitem", discountable=True,
                    metadata=item["metadata"])
        lines.append(line)
    total = sum(line["amount"] for line in lines)
    created = now()
    collection = params.get("collection_method", "charge_automatically")
    return _create_plain(
        store, resource, params, id=invoice_id, customer=customer["id"], customer_email=customer["email"],
        customer_name=customer["name"], currency=pending[0]["currency"] if pending else "usd", amount_due=total,
        amount_remaining=total, subtotal=total, total=total, status="draft", collection_method=collection,
        auto_advance=params.get("auto_advance", collection == "charge_automatically"), billing_reason="manual",
        period_start=created, period_end=created, starting_balance=customer["balance"],
        due_date=created + _int(params["days_until_due"], "days_until_due") * DAY
        if params.get("days_until_due") else None,
        lines={"object": "list", "data": lines, "has_more": False,
               "url": f"/v1/invoices/{invoice_id}/lines"},
    )


def _finalize_invoice(store: Store, invoice: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    if invoice["status"] != "draft":
        raise StripeError(400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.")
    customer = store.rows["customers"].get(invoice["customer"], {})
    sequence = customer.get("next_invoice_sequence") or 1
    if customer:
        customer["next_invoice_sequence"] = sequence + 1
    finalized = now()
    token = store.new_id("test", 24)
    invoice.update(status="open", number=f"{customer.get('invoice_prefix', 'FAKE')}-{sequence:04d}",
                   hosted_invoice_url=f"https://invoice.stripe.com/i/acct_fake/{token}",
                   invoice_pdf=f"https://pay.stripe.com/invoice/acct_fake/{token}/pdf")
    invoice["status_transitions"]["finalized_at"] = finalized
    if "auto_advance" in params:
        invoice["auto_advance"] = _bool(params["auto_advance"])
    if invoice["amount_due"] == 0:
        invoice.update(status="paid", paid=True)
        invoice["status_transitions"]["paid_at"] = finalized
    store.emit("finalized", invoice)
    return invoice


def _delete_invoice(store: Store, resource: str, record_id: str) -> dict[str, Any]:
    invoice = store.get(resource, record_id)
    if invoice["status"] != "draft":
        raise StripeError(400, "You can only delete draft invoices. Void the invoice instead.")
    for item in store.rows["invoiceitems"].values():
        if item["invoice"] == record_id:
            item["invoice"] = None
    return _delete_plain(store, resource, record_id)


def _create_subscription(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    customer = _customer(store, params)
    if not params.get("items"):
        raise StripeError(400, "Missing required param: items.", code="parameter_missing", param="items")
    sub_id = store.new_id("sub", 14)
    created = now()
    items = []
    for index, wanted in enumerate(params["items"]):
        items.append(_subscription_item(store, sub_id, wanted, index, created))
    interval = {"day": 1, "week": 7, "month": 30, "year": 365}[items[0]["price"]["recurring"]["interval"]] * DAY
    return _create_plain(
        store, resource, params, id=sub_id, customer=customer, status="active", start_date=created,
        billing_cycle_anchor=created, current_period_start=created, current_period_end=created + interval,
        collection_method=params.get("collection_method", "charge_automatically"),
        items={"object": "list", "data": items, "has_more": False,
               "url": f"/v1/subscription_items?subscription={sub_id}"},
    )


def _subscription_item(store: Store, sub_id: str, wanted: dict[str, Any], index: int, created: int) -> dict[str, Any]:
    price = store.get("prices", wanted.get("price") or "", f"items[{index}][price]")
    if price["type"] != "recurring":
        raise StripeError(400, "The price specified is set to `type=one_time` but this field only accepts "
                               "prices with `type=recurring`.", param=f"items[{index}][price]")
    item = blank("subscription_item")
    item.update(id=store.new_id("si", 14), created=created, price=price, subscription=sub_id,
                quantity=_item_quantity(price, wanted.get("quantity"), index),
                metadata=_metadata({}, wanted.get("metadata")))
    return item


def _item_quantity(price: dict[str, Any], quantity: Any, index: int) -> int | None:
    """A licensed item's quantity (1 unless given); a metered one has none."""
    if price["recurring"].get("usage_type") != "metered":
        return _int(1 if quantity in (None, "") else quantity, "quantity")
    if quantity not in (None, ""):
        raise StripeError(400, "Quantity should not be specified where usage_type is `metered`. Remove quantity "
                               "from the request.", param=f"items[{index}][quantity]")
    return None


def _updated_items(store: Store, subscription: dict[str, Any], changes: Any) -> list[dict[str, Any]]:
    """The subscription's items after ``items[N][…]`` changes, as Stripe applies
    them: an ``id`` names the item to change (``deleted`` removes it), an item
    without one is added; items not named stay."""
    if not isinstance(changes, list):
        raise StripeError(400, "Invalid array", param="items")
    items = {item["id"]: copy.deepcopy(item) for item in subscription["items"]["data"]}
    for index, change in enumerate(changes):
        if not isinstance(change, dict):
            raise StripeError(400, "Invalid object", param=f"items[{index}]")
        if not change.get("id"):
            item = _subscription_item(store, subscription["id"], change, index, now())
            items[item["id"]] = item
            continue
        item = items.get(change["id"])
        if item is None:
            raise StripeError(400, f"Invalid subscription_item: {change['id']} does not belong to this subscription",
                              param=f"items[{index}][id]")
        if change.get("deleted") in (True, "true"):
            if item["price"].get("recurring", {}).get("usage_type") == "metered" \
                    and change.get("clear_usage") not in (True, "true"):
                raise StripeError(400, "Deleting a metered subscription item requires clear_usage=true, which "
                                       "deletes the usage reported for it.", param=f"items[{index}][clear_usage]")
            del items[change["id"]]
            continue
        if change.get("price"):
            item["price"] = store.get("prices", change["price"], f"items[{index}][price]")
        if change.get("quantity") not in (None, ""):
            item["quantity"] = _item_quantity(item["price"], change["quantity"], index)
        if "metadata" in change:
            item["metadata"] = _metadata(item["metadata"], change["metadata"])
    if not items:
        raise StripeError(400, "A subscription must have at least one active plan. To cancel a subscription, "
                               "please use the cancel API endpoint on /v1/subscriptions.", param="items")
    return list(items.values())


def _delete_subscription(store: Store, resource: str, record_id: str) -> dict[str, Any]:
    subscription = store.get(resource, record_id)
    if subscription["status"] == "canceled":
        raise missing("subscription", record_id)
    ended = now()
    subscription.update(status="canceled", canceled_at=ended, ended_at=ended)
    store.emit("deleted", subscription)
    return subscription


def _create_webhook_endpoint(store: Store, resource: str, params: dict[str, Any]) -> dict[str, Any]:
    secret = "whsec_" + "".join(store.rng.choices(ALPHABET, k=32))
    endpoint = new_object(store, resource, params, status="enabled", api_version=params.get("api_version"),
                          enabled_events=list(params["enabled_events"]))
    store.insert(resource, endpoint)
    store.webhook_secrets[endpoint["id"]] = secret
    return {**endpoint, "secret": secret}


def _account(store: Store, query: list[tuple[str, str]]) -> dict[str, Any]:
    """``GET /v1/account``: the connected account named by ``Stripe-Account``,
    else the key's own."""
    unknown = [name for name, _value in query if name != "expand" and not name.startswith("expand[")]
    if unknown:
        raise StripeError(400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown",
                          param=unknown[0])
    account = blank("account")
    account_id = store.account or store.id
    account.update(id=account_id, email=f"owner@{account_id.lower()}.example.com",
                   business_profile={**(account.get("business_profile") or {}), "name": f"Business {account_id}"})
    return account


def _balance(store: Store) -> dict[str, Any]:
    balance = blank("balance")
    balance.update(
        available=[{"amount": v, "currency": c, "source_types": {"card": v}} for c, v in store.available.items()],
        pending=[{"amount": v, "currency": c, "source_types": {"card": v}} for c, v in store.pending.items()],
    )
    return balance


CREATE = {
    "customers": _create_customer, "products": _create_product, "prices": _create_price,
    "payment_intents": _create_payment_intent, "charges": _create_charge, "payouts": _create_payout,
    "invoiceitems": _create_invoiceitem, "invoices": _create_invoice, "subscriptions": _create_subscription,
    "webhook_endpoints": _create_webhook_endpoint,
}
DELETE = {"customers": _delete_customer, "products": _delete_product, "invoices": _delete_invoice,
          "subscriptions": _delete_subscription}
ACTIONS = {
    ("payment_intents", "confirm"): _confirm_payment_intent,
    ("payment_intents", "cancel"): _cancel_payment_intent,
    ("invoices", "finalize"): _finalize_invoice,
}


def _int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param) from None


def _currency(params: dict[str, Any], param: str = "currency") -> str:
    """The request's currency, lowercase; Stripe's 400 for one it does not support."""
    value = params.get(param)
    if value in (None, ""):
        raise StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)
    currency = str(value).lower()
    if currency not in CURRENCIES:
        raise StripeError(400, f"Invalid currency: {value}. Stripe currently supports these currencies: "
                               f"{', '.join(sorted(CURRENCIES))}", param=param)
    return currency


def _positive(value: Any, param: str = "amount") -> int:
    amount = _int(value, param)
    if amount <= 0:
        raise StripeError(400, "Invalid positive integer", code="parameter_invalid_integer", param=param)
    return amount


def _chargeable(value: Any, currency: str, param: str = "amount") -> int:
    """A charge's amount: positive, and at least the currency's minimum charge."""
    amount = _positive(value, param)
    minimum = MINIMUM_CHARGE.get(currency, 50)
    if amount < minimum:
        shown = str(minimum) if currency in ZERO_DECIMAL else f"{minimum / 100:.2f}"
        raise StripeError(400, f"Amount must be at least {'$' if currency == 'usd' else ''}{shown} {currency}",
                          code="amount_too_small", param=param)
    return amount


def _bool(value: Any) -> bool:
    return value is True or value == "true"


# ---------------------------------------------------------------- helpers for tests


def seed_customers(app: FastAPI, count: int, start: int | None = None, **fields: Any) -> list[str]:
    """Insert ``count`` customers directly (no HTTP, no events), created now,
    or one second apart from the Unix time ``start``; returns their ids,
    oldest first."""
    store: Store = app.state.store
    template = blank("customer")
    ids = []
    for i in range(count):
        customer = copy.deepcopy(template)
        created = now() if start is None else start + i
        customer.update(id=store.new_id("cus"), created=created, livemode=False, email=f"customer{i}@example.com",
                        name=f"Customer {i}", invoice_prefix=f"{i:08X}", tax_exempt="none", next_invoice_sequence=1,
                        delinquent=False, preferred_locales=[], **fields)
        store.insert("customers", customer)
        ids.append(customer["id"])
    return ids


def seed(app: FastAPI, entity: str, count: int) -> list[str] | None:
    """The conformance suite's seed: ``count`` objects of ``entity`` created
    directly in the store (``None`` where the fake cannot make them alone)."""
    store: Store = app.state.store
    if entity == "customers":
        return seed_customers(app, count)
    if entity == "balance_transactions":  # every charge makes one
        return [_create_charge(store, "charges", {"amount": 100 + i, "currency": "usd", "source": "tok_visa"})["balance_transaction"]
                for i in range(count)]
    makers = {
        "products": lambda i: _create_product(store, "products", {"name": f"Product {i}"}),
        "prices": lambda i: _create_price(store, "prices", {"product": _seed_product(store), "currency": "usd",
                                                            "unit_amount": 100 + i}),
        "payment_intents": lambda i: _create_payment_intent(store, "payment_intents",
                                                            {"amount": 100 + i, "currency": "usd"}),
        "charges": lambda i: _create_charge(store, "charges", {"amount": 100 + i, "currency": "usd", "source": "tok_visa"}),
        "payouts": lambda i: _create_payout(store, "payouts", {"amount": 1 + i, "currency": "usd"}),
        "invoices": lambda i: _seed_invoice(store, i),
        "subscriptions": lambda i: _seed_subscription(store, i),
    }
    make = makers.get(entity)
    return [make(i)["id"] for i in range(count)] if make else None


def _seed_product(store: Store) -> str:
    return next(iter(store.rows["products"]), None) or _create_product(store, "products", {"name": "Seed"})["id"]


def _seed_subscription(store: Store, i: int) -> dict[str, Any]:
    """An active subscription of a new customer to the seed's monthly price."""
    customer = _create_customer(store, "customers", {"email": f"subscriber{i}@example.com"})["id"]
    price = next((p["id"] for p in store.rows["prices"].values() if p["type"] == "recurring" and p["active"]), None)
    if price is None:
        price = _create_price(store, "prices", {"product": _seed_product(store), "currency": "usd", "unit_amount": 900,
                                                "recurring": {"interval": "month"}})["id"]
    return _create_subscription(store, "subscriptions", {"customer": customer, "items": [{"price": price}]})


def _seed_invoice(store: Store, i: int) -> dict[str, Any]:
    customer = _create_customer(store, "customers", {"email": f"invoice{i}@example.com"})["id"]
    _create_invoiceitem(store, "invoiceitems", {"customer": customer, "amount": 100 + i, "currency": "usd"})
    return _create_invoice(store, "invoices", {"customer": customer})


CONFORMANCE_ACCOUNT = "acct_1Conformance"
CONFORMANCE_SECRET = "whsec_conformance"


def conformance_app(**options: Any) -> FastAPI:
    """A fake with known objects for the hub's conformance suite: the customer
    ``cus_conformance`` with a pending invoice item, the product
    ``prod_conformance``, its one-off price ``price_conformance`` and its
    monthly price ``price_conformance_monthly`` (for subscriptions)."""
    app = create_app(**{"rate": 200, "available": 10**7, **options})
    store = app.state.store
    _rename(store, "customers", _create_customer(store, "customers", {"email": "conformance@example.com",
                                                                      "source": "tok_visa"}),
            "cus_conformance")
    _rename(store, "products", _create_product(store, "products", {"name": "Conformance"}), "prod_conformance")
    price = _create_price(store, "prices", {"product": "prod_conformance", "currency": "usd", "unit_amount": 1500})
    _rename(store, "prices", price, "price_conformance")
    monthly = _create_price(store, "prices", {"product": "prod_conformance", "currency": "usd", "unit_amount": 900,
                                              "recurring": {"interval": "month"}})
    _rename(store, "prices", monthly, "price_conformance_monthly")
    _create_invoiceitem(store, "invoiceitems", {"customer": "cus_conformance", "price": "price_conformance"})
    store.events.clear()
    return app


def _rename(store: Store, resource: str, obj: dict[str, Any], new_id: str) -> None:
    store.remove(resource, obj["id"])
    obj["id"] = new_id
    store.insert(resource, obj)


def make_event(type: str, obj: dict[str, Any], *, account: str | None = None, event_id: str | None = None,
               created: int | None = None, previous_attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Stripe event (``evt_…``) carrying ``obj`` as ``data.object``."""
    data: dict[str, Any] = {"object": copy.deepcopy(obj)}
    if previous_attributes:
        data["previous_attributes"] = previous_attributes
    event = {
        "id": event_id or "evt_" + "".join(random.choices(ALPHABET, k=24)),
        "object": "event", "api_version": STRIPE_VERSION, "created": created or now(), "data": data,
        "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}, "type": type,
    }
    if account:
        event["account"] = account
    return event


def signature_header(secrets: str | list[str], body: bytes, timestamp: int | None = None) -> str:
    """``Stripe-Signature: t=…,v1=…`` with one ``v1`` per secret (as during a rotation)."""
    timestamp = now() if timestamp is None else timestamp
    secrets = [secrets] if isinstance(secrets, str) else secrets
    return ",".join([f"t={timestamp}", *(f"v1={sign(s, timestamp, body)}" for s in secrets)])


def signed_delivery(secret: str | list[str], event: dict[str, Any],
                    timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a delivery of ``event`` as Stripe sends it."""
    body = json.dumps(event, indent=2).encode()
    return body, {"Stripe-Signature": signature_header(secret, body, timestamp),
                  "Content-Type": "application/json; charset=utf-8",
                  "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}


def send_event(url: str, secret: str | list[str], event: dict[str, Any], timestamp: int | None = None,
               client: Any = None) -> httpx.Response:
    """POST a signed delivery of ``event`` to ``url`` (with ``client``, e.g. a
    TestClient, or a fresh httpx call)."""
    body, headers = signed_delivery(secret, event, timestamp)
    return (client or httpx).post(url, content=body, headers=headers)


def main(argv: list[str] | None = None) -> None:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="Run hub's fake Stripe API")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--customers", type=int, default=0)
    parser.add_argument("--rate", type=float, default=25)
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args(argv)
    app = create_app(api_key=args.api_key, rate=args.rate, customers=args.customers, validate=not args.no_validate)
    print(f"fake Stripe on http://127.0.0.1:{args.port} (api key {args.api_key})")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
