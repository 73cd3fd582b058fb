"""A fake Plaid API (version 2020-09-14) for tests, served over real HTTP.

It behaves like Plaid where the plugin depends on it:

- every request is checked against Plaid's official OpenAPI spec (loaded once
  per process, pruned to the paths served); a request the real API would
  reject gets Plaid's ``INVALID_REQUEST`` error, and every answer is checked
  against the spec too, so the fake cannot drift from the real shapes;
- ``PLAID-CLIENT-ID`` / ``PLAID-SECRET`` / ``Plaid-Version`` headers, with
  ``INVALID_API_KEYS``; access tokens with ``INVALID_ACCESS_TOKEN``; Items in
  ``ITEM_LOGIN_REQUIRED``; per-Item, per-endpoint rate limits answering 429
  ``RATE_LIMIT_EXCEEDED`` (no ``Retry-After``, as Plaid);
- ``/transactions/sync`` over a change log: runs from a cursor, pages of
  ``count`` changes, ``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION`` when the
  data changes mid-run (or when a test injects it);
- webhook deliveries signed like Plaid's: an ES256 JWT in ``Plaid-Verification``
  whose key ``/webhook_verification_key/get`` serves by ``kid``.

``create_app(...)`` returns the ASGI app; its state object ``app.state.plaid``
(:class:`FakePlaid`) holds the data, the counters tests assert on and the
helpers (public tokens, transaction changes, signed deliveries).
Run it alone with ``uvicorn --factory hub_plaid.testing:create_app``.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import os
import random
import re
import string
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from hub.testing.fakes import TokenBucketLimit

CLIENT_ID = "5f2b1c3d4e5f6a7b8c9d0e1f"
SECRET = "8b3c0e2d9a1f4e5b6c7d8e9f0a4242"
API_VERSION = "2020-09-14"
SPEC_ENV = "PLAID_OPENAPI_SPEC"
#: Plaid's official spec (plaid/plaid-openapi ``2020-09-14.yml``, MIT licence) pruned to
#: what the fake serves (:func:`prune_spec`), shipped with the package: ``$PLAID_OPENAPI_SPEC``
#: may name the whole YAML instead (``write_spec_subset`` makes this file from it).
DEFAULT_SPEC = Path(__file__).parent / "openapi" / "plaid-2020-09-14-subset.json"
PUBLIC_TOKEN_TTL = 30 * 60

SERVED = (
    "/link/token/create", "/link/token/get", "/item/public_token/exchange", "/sandbox/public_token/create", "/item/get",
    "/item/remove", "/accounts/get", "/accounts/balance/get", "/transactions/sync", "/transactions/refresh",
    "/institutions/get", "/institutions/get_by_id", "/categories/get", "/webhook_verification_key/get",
)
UNAUTHENTICATED = {"/categories/get"}
WEBHOOK_SCHEMAS = {
    ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"): "SyncUpdatesAvailableWebhook",
    ("TRANSACTIONS", "DEFAULT_UPDATE"): "DefaultUpdateWebhook",
    ("TRANSACTIONS", "INITIAL_UPDATE"): "InitialUpdateWebhook",
    ("TRANSACTIONS", "HISTORICAL_UPDATE"): "HistoricalUpdateWebhook",
    ("TRANSACTIONS", "TRANSACTIONS_REMOVED"): "TransactionsRemovedWebhook",
    ("ITEM", "ERROR"): "ItemErrorWebhook",
    ("ITEM", "PENDING_EXPIRATION"): "PendingExpirationWebhook",
    ("ITEM", "PENDING_DISCONNECT"): "PendingDisconnectWebhook",
    ("ITEM", "USER_PERMISSION_REVOKED"): "UserPermissionRevokedWebhook",
    ("ITEM", "LOGIN_REPAIRED"): "ItemLoginRepairedWebhook",
    ("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED"): "WebhookUpdateAcknowledgedWebhook",
}
# Plaid's messages (error_message, display_message) of the Item errors break_item sets.
ITEM_ERROR_MESSAGES = {
    "ITEM_LOGIN_REQUIRED": (
        "the login details of this item have changed (credentials, MFA, or required user action) and a user login "
        "is required to update this information. use Link's update mode to restore the item to a good state",
        "The login details of this item have changed. Please log in again."),
    "ITEM_LOCKED": (
        "the account is locked. prompt the user to visit the institution's site and unlock their account",
        "The maximum number of login attempts has been reached. Please visit your financial institution's site "
        "to unlock your account."),
    "INVALID_CREDENTIALS": ("the provided credentials were not correct",
                            "The provided credentials were not correct. Please try again."),
    "INVALID_MFA": ("the provided MFA response(s) were not correct",
                    "The provided MFA responses were not correct. Please try again."),
    "INSUFFICIENT_CREDENTIALS": ("insufficient authorization was provided to complete the request", None),
    "USER_SETUP_REQUIRED": (
        "the account has not been fully set up. prompt the user to visit the issuing institution's site and "
        "finish the setup process",
        "The given account is not fully setup. Please visit your financial institution's site to setup your "
        "account."),
    "NO_ACCOUNTS": ("no valid accounts were found for this item",
                    "No valid accounts were found at the financial institution. Please visit your financial "
                    "institution's website to confirm accounts are available."),
}
# Plaid's per-Item limits (requests per minute) for the endpoints served.
ITEM_LIMITS_PER_MINUTE = {"/accounts/get": 15, "/accounts/balance/get": 5, "/transactions/sync": 50,
                          "/transactions/refresh": 2, "/item/get": 15}
LIMIT_CODES = {"/accounts/get": "ACCOUNTS_LIMIT", "/accounts/balance/get": "BALANCE_LIMIT",
               "/transactions/sync": "TRANSACTIONS_SYNC_LIMIT", "/item/get": "ITEM_GET_LIMIT"}

SANDBOX_INSTITUTIONS = [
    ("ins_109508", "First Platypus Bank", False, "US"), ("ins_109509", "First Gingham Credit Union", False, "US"),
    ("ins_109510", "Tattersall Federal Credit Union", False, "US"), ("ins_109511", "Tartan Bank", False, "US"),
    ("ins_109512", "Houndstooth Bank", False, "US"), ("ins_127287", "Platypus OAuth Bank", True, "US"),
    ("ins_117650", "Royal Bank of Plaid", True, "GB"), ("ins_116834", "Flexible Platypus Open Banking", True, "GB"),
]
ACCOUNTS = [
    ("Plaid Checking", "Plaid Gold Standard 0% Interest Checking", "0000", "depository", "checking", 100, 110, None),
    ("Plaid Saving", "Plaid Silver Standard 0.1% Interest Saving", "1111", "depository", "savings", 200, 210, None),
    ("Plaid Credit Card", "Plaid Diamond 12.5% APR Interest Credit Card", "3333", "credit", "credit card",
     None, 410, 2000),
]
MERCHANTS = [
    ("Uber", "TRANSPORTATION", "TRANSPORTATION_TAXIS_AND_RIDE_SHARES", "online"),
    ("Starbucks", "FOOD_AND_DRINK", "FOOD_AND_DRINK_COFFEE", "in store"),
    ("United Airlines", "TRAVEL", "TRAVEL_FLIGHTS", "online"),
    ("McDonald's", "FOOD_AND_DRINK", "FOOD_AND_DRINK_FAST_FOOD", "in store"),
    ("Madison Bicycle Shop", "GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_SPORTING_GOODS", "in store"),
    ("SparkFun", "GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE_ELECTRONICS", "online"),
]
CATEGORIES = [
    ("10000000", "special", ["Bank Fees"]), ("10001000", "special", ["Bank Fees", "Overdraft"]),
    ("13005000", "place", ["Food and Drink", "Restaurants"]),
    ("13005043", "place", ["Food and Drink", "Restaurants", "Coffee Shop"]),
    ("22001000", "special", ["Travel", "Airlines and Aviation Services"]),
    ("22016000", "place", ["Travel", "Taxi"]), ("19012000", "place", ["Shops", "Computers and Electronics"]),
]


class PlaidAPIError(Exception):
    """An error the fake answers with Plaid's error body."""

    def __init__(self, status: int, error_type: str, error_code: str, message: str, display: str | None = None):
        super().__init__(message)
        self.status, self.error_type, self.error_code, self.display = status, error_type, error_code, display

    def body(self, request_id: str) -> dict[str, Any]:
        return {"error_type": self.error_type, "error_code": self.error_code, "error_code_reason": None,
                "error_message": str(self), "display_message": self.display, "request_id": request_id,
                "causes": [], "status": self.status, "suggested_action": None,
                "documentation_url": f"https://plaid.com/docs/errors/#{self.error_code.lower()}"}


# ---------------------------------------------------------------- the official spec


class SpecValidator:
    """Plaid's OpenAPI spec, pruned to the served paths, as openapi-core validators."""

    def __init__(self, spec: dict[str, Any], load_seconds: float):
        from openapi_core import Config, OpenAPI
        from openapi_schema_validator import OAS30Validator

        self.api = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))
        schemas = spec["components"]["schemas"]
        self.fields = {}
        for path, item in spec["paths"].items():
            ref = item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            self.fields[path] = set(schemas[ref.rsplit("/", 1)[1]].get("properties", {}))
        self.webhooks = {name: OAS30Validator({"$ref": f"#/components/schemas/{name}",
                                               "components": spec["components"]})
                         for name in WEBHOOK_SCHEMAS.values()}
        self.load_seconds = load_seconds

    def request_problem(self, request: Any) -> tuple[str, str] | None:
        """``(error_code, message)`` when Plaid would refuse the request."""
        from openapi_core.exceptions import OpenAPIError
        from openapi_core.validation.request.exceptions import SecurityValidationError

        try:
            body = json.loads(request.body)
        except ValueError:
            return "INVALID_BODY", "body could not be parsed as JSON"
        unknown = sorted(set(body) - self.fields[request.path]) if isinstance(body, dict) else []
        if unknown:
            return "UNKNOWN_FIELDS", f"the following fields are not recognized by this endpoint: {', '.join(unknown)}"
        try:
            self.api.validate_request(request)
        except SecurityValidationError:
            return "MISSING_FIELDS", "client_id, secret and Plaid-Version must be sent in the PLAID-CLIENT-ID, " \
                                     "PLAID-SECRET and Plaid-Version headers"
        except OpenAPIError as exc:
            errors = list(getattr(exc.__cause__, "schema_errors", ()))
            missing = [".".join([*map(str, e.path), re.sub(r"^'(.*)' is a required property$", r"\1", e.message)])
                       for e in errors if e.validator == "required"]
            if missing:
                return "MISSING_FIELDS", f"the following required fields are missing: {', '.join(missing)}"
            described = "; ".join(f"{'.'.join(map(str, e.path)) or 'body'}: {e.message}" for e in errors[:5])
            return "INVALID_FIELD", described or str(exc)
        return None

    def response_problem(self, request: Any, status: int, data: dict[str, Any]) -> str | None:
        from openapi_core.exceptions import OpenAPIError
        from openapi_core.testing import MockResponse

        try:
            self.api.validate_response(request, MockResponse(json.dumps(data).encode(), status_code=status))
        except OpenAPIError as exc:
            errors = getattr(exc.__cause__, "schema_errors", ())
            return "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5]) or str(exc)
        return None

    def webhook_problem(self, payload: dict[str, Any]) -> str | None:
        name = WEBHOOK_SCHEMAS.get((payload.get("webhook_type"), payload.get("webhook_code")))
        errors = list(self.webhooks[name].iter_errors(payload)) if name else []
        return "; ".join(e.message for e in errors[:5]) or None


def _refs(node: Any, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.append(node["$ref"])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)
    return found


def prune_spec(spec: dict[str, Any], paths: tuple[str, ...], extra_schemas: tuple[str, ...] = ()) -> dict[str, Any]:
    """The spec reduced to ``paths`` and the components they reference, served from any host."""
    kept = {path: spec["paths"][path] for path in paths}
    schemas: dict[str, Any] = {}
    todo = _refs(kept, [f"#/components/schemas/{name}" for name in extra_schemas])
    while todo:
        name = todo.pop().rsplit("/", 1)[1]
        if name not in schemas:
            schemas[name] = spec["components"]["schemas"][name]
            _refs(schemas[name], todo)
    return {"openapi": spec["openapi"], "info": spec["info"], "servers": [{"url": "/"}],
            "security": spec["security"], "paths": kept,
            "components": {"schemas": schemas, "securitySchemes": spec["components"]["securitySchemes"]}}


def _pruned_spec(location: Path) -> dict[str, Any]:
    if location.suffix == ".json":
        spec = json.loads(location.read_bytes())
    else:
        import yaml

        with location.open("rb") as handle:
            spec = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return prune_spec(spec, SERVED, tuple(WEBHOOK_SCHEMAS.values()))  # (a pruned one is kept as it is)


def write_spec_subset(source: str | Path, target: str | Path = DEFAULT_SPEC) -> int:
    """Write the part of Plaid's whole spec (``source``, YAML) the fake serves
    to ``target`` as JSON (after serving a new endpoint); its size in bytes."""
    text = json.dumps(_pruned_spec(Path(source)), sort_keys=True, separators=(",", ":"))
    Path(target).write_text(text)
    return len(text)


@functools.cache
def spec_validator(path: str | None = None) -> SpecValidator:
    """The validator for the spec at ``path`` (default: ``$PLAID_OPENAPI_SPEC``, else the
    bundled reference copy), built once per process: about 1 s, mostly YAML parsing."""
    location = Path(path or os.environ.get(SPEC_ENV) or DEFAULT_SPEC)
    if not location.exists():
        raise FileNotFoundError(f"Plaid's OpenAPI spec is not at {location}: set {SPEC_ENV}")
    started = time.perf_counter()
    validator = SpecValidator(_pruned_spec(location), 0.0)
    validator.load_seconds = time.perf_counter() - started
    return validator


# ---------------------------------------------------------------- state


@dataclass
class Item:
    item_id: str
    access_token: str
    institution_id: str
    products: list[str]
    webhook: str | None
    accounts: list[dict[str, Any]]
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)
    version: int = 0
    error: dict[str, Any] | None = None


@dataclass
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    created_at: int
    expired_at: int | None = None

    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": "ES256", "use": "sig", "created_at": self.created_at,
                "expired_at": self.expired_at}


class FakePlaid:
    """The fake's data, counters and test helpers (``app.state.plaid``)."""

    def __init__(self, transactions: int = 120, institutions: int = 40, seed: int = 7,
                 rate_limits: dict[str, tuple[int, float]] | None = None,
                 client_id: str = CLIENT_ID, secret: str = SECRET, environment: str = "sandbox",
                 validator: SpecValidator | None = None):
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.clients = {client_id: secret}
        self.environment = environment
        self.validator = validator
        self.transactions_per_item = transactions
        self.items: dict[str, Item] = {}
        self.graveyard: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.public_tokens: dict[str, dict[str, Any]] = {}
        self.link_tokens: dict[str, dict[str, Any]] = {}
        self.institutions = self._institutions(institutions)
        self.rate_limits = dict(rate_limits if rate_limits is not None else
                                {p: (n, n / 60) for p, n in ITEM_LIMITS_PER_MINUTE.items()})
        self.buckets: dict[tuple[str, str], TokenBucketLimit] = {}
        self.keys: dict[str, SigningKey] = {}
        self.current_kid = self.rotate_key()
        self.mutation_errors_pending = 0
        #: Calls to a path applied but answered by a proxy's 502 (their answer lost): ``{path: count}``.
        self.lose_answers: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        # counters
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.invalid_requests: list[tuple[str, str]] = []
        self.response_problems: list[tuple[str, str]] = []
        self.removed_items: list[str] = []
        self.refreshes: Counter[str] = Counter()
        self.key_fetches: Counter[str] = Counter()
        self.routes = {
            "/link/token/create": self._link_token_create, "/link/token/get": self._link_token_get,
            "/item/public_token/exchange": self._exchange,
            "/sandbox/public_token/create": self._sandbox_public_token, "/item/get": self._item_get,
            "/item/remove": self._item_remove, "/accounts/get": self._accounts_get,
            "/accounts/balance/get": self._balance_get, "/transactions/sync": self._transactions_sync,
            "/transactions/refresh": self._transactions_refresh, "/institutions/get": self._institutions_get,
            "/institutions/get_by_id": self._institution_get_by_id, "/categories/get": self._categories_get,
            "/webhook_verification_key/get": self._verification_key_get,
        }

    # -- request pipeline

    def handle(self, path: str, headers: dict[str, str], raw: bytes, host_url: str) -> Response:
        from openapi_core.testing import MockRequest

        request_id = "".join(self.rng.choices(string.ascii_letters + string.digits, k=15))
        request = MockRequest(host_url, "post", path, headers=headers, data=raw)
        with self.lock:
            self.calls[path] += 1
            try:
                data = self._answer(path, request, raw)
                status = 200
            except PlaidAPIError as exc:
                self.errors[exc.error_code] += 1
                data, status = exc.body(request_id), exc.status
            else:
                data["request_id"] = request_id
        if self.validator and status != 404:
            problem = self.validator.response_problem(request, status, data)
            if problem:
                self.response_problems.append((path, problem))
                data, status = PlaidAPIError(500, "API_ERROR", "INTERNAL_SERVER_ERROR",
                                             f"the fake answered off-spec: {problem}").body(request_id), 500
        if status == 200 and self.lose_answers[path] > 0:
            self.lose_answers[path] -= 1  # applied, but a proxy on the way answers instead
            return HTMLResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502)
        return JSONResponse(data, status_code=status)

    def _answer(self, path: str, request: Any, raw: bytes) -> dict[str, Any]:
        route = self.routes.get(path)
        if route is None:
            raise PlaidAPIError(404, "INVALID_REQUEST", "NOT_FOUND", "not found")
        problem = self.validator.request_problem(request) if self.validator else None
        if problem:
            self.invalid_requests.append((path, problem[1]))
            raise PlaidAPIError(400, "INVALID_REQUEST", *problem)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if path not in UNAUTHENTICATED:
            if self.clients.get(headers.get("plaid-client-id", "")) != headers.get("plaid-secret") or \
                    not headers.get("plaid-secret"):
                raise PlaidAPIError(400, "INVALID_INPUT", "INVALID_API_KEYS", "invalid client_id or secret provided")
            if headers.get("plaid-version") != API_VERSION:
                raise PlaidAPIError(400, "INVALID_REQUEST", "INVALID_FIELD",
                                    f"this fake serves Plaid-Version {API_VERSION} only")
        return route(json.loads(raw))

    def _item(self, body: dict[str, Any], path: str, healthy: bool = True) -> Item:
        item = self.items.get(self.tokens.get(body["access_token"], ""))
        if item is None:
            raise PlaidAPIError(400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN",
                                "the provided access token is invalid or has been removed")
        limit = self.rate_limits.get(path)
        if limit or self.throttled[path]:
            bucket = self.buckets.get((item.item_id, path))
            if bucket is None and limit:
                bucket = self.buckets[(item.item_id, path)] = TokenBucketLimit(limit[0], limit[1])
            if self.throttled[path] or (bucket and not bucket.hit().allowed):
                self.throttled[path] = max(0, self.throttled[path] - 1)
                raise PlaidAPIError(429, "RATE_LIMIT_EXCEEDED", LIMIT_CODES.get(path, "RATE_LIMIT"),
                                    "rate limit exceeded for attempts to access this item. please try again later")
        if healthy and item.error:
            raise PlaidAPIError(400, item.error["error_type"], item.error["error_code"], item.error["error_message"],
                                item.error["display_message"])
        return item

    # -- endpoints

    def _link_token_create(self, body: dict[str, Any]) -> dict[str, Any]:
        update = None
        if body.get("access_token"):  # update mode: the user logs in to an existing Item again
            update = self._item(body, "/link/token/create", healthy=False).item_id
            if body.get("products"):
                raise PlaidAPIError(400, "INVALID_REQUEST", "INVALID_FIELD",
                                    "products should be omitted when launching Link in update mode")
        elif not body.get("products"):
            raise PlaidAPIError(400, "INVALID_REQUEST", "MISSING_FIELDS", "the following required fields are "
                                "missing: products")
        token = f"link-{self.environment}-{uuid.uuid4()}"
        created = datetime.now(timezone.utc)
        self.link_tokens[token] = {**body, "_created": created, "_sessions": [], "_update": update}
        expiration = created + timedelta(hours=4)
        return {"link_token": token, "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _link_token_get(self, body: dict[str, Any]) -> dict[str, Any]:
        """The Link sessions run with a link token, each with the public token it
        handed out (``results.item_add_results``): how a server checks that a
        public token came from its own link token."""
        request = self.link_tokens.get(body["link_token"])
        if request is None:
            raise PlaidAPIError(400, "INVALID_INPUT", "INVALID_LINK_TOKEN", "provided link token is invalid")
        created = request["_created"]
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        sessions = [{
            "link_session_id": session["id"], "started_at": session["at"].strftime(stamp),
            "finished_at": session["at"].strftime(stamp),
            "results": {"item_add_results": [{
                "public_token": session["public_token"], "accounts": [],
                "institution": {"institution_id": session["institution_id"],
                                "name": self.institutions.get(session["institution_id"], {}).get("name")}}],
                "cra_item_add_results": [], "cra_update_results": [], "bank_income_results": [],
                "payroll_income_results": [], "document_income_results": None},
        } for session in request["_sessions"]]
        return {"link_token": body["link_token"], "created_at": created.strftime(stamp),
                "expiration": (created + timedelta(hours=4)).strftime(stamp), "link_sessions": sessions,
                "user_id": (request.get("user") or {}).get("client_user_id"),
                "metadata": {"initial_products": request.get("products") or [], "webhook": request.get("webhook"),
                             "country_codes": request.get("country_codes") or [],
                             "language": request.get("language"), "redirect_uri": request.get("redirect_uri"),
                             "client_name": request.get("client_name")}}

    def _sandbox_public_token(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["institution_id"] not in self.institutions:
            raise PlaidAPIError(400, "INVALID_INPUT", "INVALID_INSTITUTION", "invalid institution_id provided")
        return {"public_token": self._public_token(body["institution_id"], body["initial_products"],
                                                   (body.get("options") or {}).get("webhook"))}

    def _public_token(self, institution_id: str, products: list[str], webhook: str | None) -> str:
        token = f"public-{self.environment}-{uuid.uuid4()}"
        self.public_tokens[token] = {"institution_id": institution_id, "products": list(products),
                                     "webhook": webhook, "created": time.time()}
        return token

    def _exchange(self, body: dict[str, Any]) -> dict[str, Any]:
        grant = self.public_tokens.pop(body["public_token"], None)
        if grant is None or time.time() - grant["created"] > PUBLIC_TOKEN_TTL:
            raise PlaidAPIError(400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN",
                                "provided public token is expired, already used or invalid")
        item = Item(item_id=self._id(), access_token=f"access-{self.environment}-{uuid.uuid4()}",
                    institution_id=grant["institution_id"], products=grant["products"], webhook=grant["webhook"],
                    accounts=[self._account(*spec) for spec in ACCOUNTS])
        self.items[item.item_id] = item
        self.tokens[item.access_token] = item.item_id
        self._add(item, self.transactions_per_item)
        return {"access_token": item.access_token, "item_id": item.item_id}

    def _item_get(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"item": self._item_json(self._item(body, "/item/get", healthy=False))}

    def _item_remove(self, body: dict[str, Any]) -> dict[str, Any]:
        item = self._item(body, "/item/remove", healthy=False)
        del self.tokens[item.access_token]
        self.removed_items.append(item.item_id)
        return {}

    def _accounts_get(self, body: dict[str, Any]) -> dict[str, Any]:
        item = self._item(body, "/accounts/get")
        return {"accounts": self._select(item, body), "item": self._item_json(item)}

    def _balance_get(self, body: dict[str, Any]) -> dict[str, Any]:
        item = self._item(body, "/accounts/balance/get")
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        accounts = [{**a, "balances": {**a["balances"], "last_updated_datetime": now}} for a in self._select(item, body)]
        return {"accounts": accounts, "item": self._item_json(item)}

    def _select(self, item: Item, body: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = (body.get("options") or {}).get("account_ids")
        unknown = set(wanted or ()) - {a["account_id"] for a in item.accounts}
        if unknown:
            raise PlaidAPIError(400, "INVALID_INPUT", "INVALID_ACCOUNT_ID", "one or more of the account IDs is invalid")
        return copy.deepcopy([a for a in item.accounts if wanted is None or a["account_id"] in wanted])

    def _transactions_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        item = self._item(body, "/transactions/sync")
        position = self._decode_cursor(item, body.get("cursor"))
        start, snapshot, offset = position.get("v", 0), position.get("s"), position.get("o", 0)
        if snapshot is not None and (snapshot != item.version or self.mutation_errors_pending):
            self.mutation_errors_pending = max(0, self.mutation_errors_pending - 1)
            raise PlaidAPIError(400, "TRANSACTIONS_ERROR", "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION",
                                "Underlying transaction data changed since last page was fetched. "
                                "Please restart pagination from last update.")
        changes = self._changes(item, start)
        count = body.get("count", 100)
        page, has_more = changes[offset:offset + count], offset + count < len(changes)
        following = {"v": start, "s": item.version, "o": offset + count} if has_more else {"v": item.version}
        return {
            "added": [copy.deepcopy(item.transactions[t]) for kind, t in page if kind == "added"],
            "modified": [copy.deepcopy(item.transactions[t]) for kind, t in page if kind == "modified"],
            "removed": [{"transaction_id": t, "account_id": self._removed_account(item, t)}
                        for kind, t in page if kind == "removed"],
            "next_cursor": self._encode_cursor(item, following), "has_more": has_more,
            "accounts": copy.deepcopy(item.accounts), "transactions_update_status": "HISTORICAL_UPDATE_COMPLETE",
        }

    def _transactions_refresh(self, body: dict[str, Any]) -> dict[str, Any]:
        self.refreshes[self._item(body, "/transactions/refresh").item_id] += 1
        return {}

    def _institutions_get(self, body: dict[str, Any]) -> dict[str, Any]:
        matching = [i for i in self.institutions.values() if set(i["country_codes"]) & set(body["country_codes"])]
        page = matching[body["offset"]:body["offset"] + body["count"]]
        return {"institutions": copy.deepcopy(page), "total": len(matching)}

    def _institution_get_by_id(self, body: dict[str, Any]) -> dict[str, Any]:
        institution = self.institutions.get(body["institution_id"])
        if institution is None or not set(institution["country_codes"]) & set(body["country_codes"]):
            raise PlaidAPIError(400, "INVALID_INPUT", "INVALID_INSTITUTION", "invalid institution_id provided")
        return {"institution": copy.deepcopy(institution)}

    def _categories_get(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"categories": [{"category_id": c, "group": g, "hierarchy": h} for c, g, h in CATEGORIES]}

    def _verification_key_get(self, body: dict[str, Any]) -> dict[str, Any]:
        key = self.keys.get(body["key_id"])
        if key is None:
            raise PlaidAPIError(400, "INVALID_INPUT", "INVALID_WEBHOOK_VERIFICATION_KEY_ID",
                                "invalid key_id provided. note that key_ids are specific to Plaid environments")
        self.key_fetches[key.kid] += 1
        return {"key": key.public_jwk()}

    # -- transactions as a change log

    def _changes(self, item: Item, start: int) -> list[tuple[str, str]]:
        """The changes since version ``start``, ordered by their latest change."""
        touched = []
        for tid, history in item.history.items():
            latest = history[-1][0]
            if latest <= start:
                continue
            before = next((exists for version, exists in reversed(history) if version <= start), False)
            now = history[-1][1]
            if now or before:
                touched.append((latest, "modified" if now and before else "added" if now else "removed", tid))
        return [(kind, tid) for _, kind, tid in sorted(touched)]

    def _removed_account(self, item: Item, tid: str) -> str:
        return self.graveyard.get(tid, item.accounts[0]["account_id"])

    def _encode_cursor(self, item: Item, position: dict[str, Any]) -> str:
        return base64.b64encode(json.dumps({"i": item.item_id, **position}).encode()).decode()

    def _decode_cursor(self, item: Item, cursor: str | None) -> dict[str, Any]:
        if not cursor:
            return {}
        try:
            position = json.loads(base64.b64decode(cursor, validate=True))
            assert position["i"] == item.item_id
            return position
        except (ValueError, KeyError, TypeError, AssertionError):
            raise PlaidAPIError(400, "INVALID_REQUEST", "INVALID_FIELD", "cursor is not valid for this item") from None

    def _record(self, item: Item, tid: str, exists: bool) -> None:
        item.version += 1
        item.history.setdefault(tid, []).append((item.version, exists))

    def _add(self, item: Item, count: int) -> list[dict[str, Any]]:
        added = []
        for _ in range(count):
            tx = self._transaction(item, len(item.history))
            item.transactions[tx["transaction_id"]] = tx
            self._record(item, tx["transaction_id"], True)
            added.append(copy.deepcopy(tx))
        return added

    # -- test helpers

    def create_public_token(self, institution_id: str = "ins_109508", products: tuple[str, ...] = ("transactions",),
                            link_token: str | None = None, webhook: str | None = None) -> str:
        """What Link hands the browser (like /sandbox/public_token/create); with a
        ``link_token``, the products and webhook it was created with. A link
        token of update mode (made with an ``access_token``) mends its Item."""
        with self.lock:
            if link_token is None:
                return self._public_token(institution_id, list(products), webhook)
            request = self.link_tokens[link_token]
            if request["_update"] is not None:
                # Update mode: the user logged in again; the Item is mended and its public
                # token needs no exchange (Plaid hands one out all the same).
                item = self.items[request["_update"]]
                item.error = None
                institution_id = item.institution_id
            products, webhook = tuple(request.get("products") or products), request.get("webhook", webhook)
            token = self._public_token(institution_id, list(products), webhook)
            request["_sessions"].append({"id": str(uuid.uuid4()), "at": datetime.now(timezone.utc),
                                         "public_token": token, "institution_id": institution_id})
            return token

    def item(self, item_id: str | None = None) -> Item:
        """An Item by id, or the only one."""
        with self.lock:
            if item_id is None:
                [item_id] = self.items
            return self.items[item_id]

    def add_transactions(self, item_id: str, count: int = 1) -> list[dict[str, Any]]:
        with self.lock:
            return self._add(self.items[item_id], count)

    def modify_transaction(self, item_id: str, transaction_id: str, **changes: Any) -> dict[str, Any]:
        with self.lock:
            item = self.items[item_id]
            item.transactions[transaction_id].update(changes)
            self._record(item, transaction_id, True)
            return copy.deepcopy(item.transactions[transaction_id])

    def remove_transaction(self, item_id: str, transaction_id: str) -> None:
        with self.lock:
            item = self.items[item_id]
            self.graveyard[transaction_id] = item.transactions.pop(transaction_id)["account_id"]
            self._record(item, transaction_id, False)

    def cursor_now(self, item_id: str) -> str:
        """The cursor a client holds after syncing everything up to now."""
        with self.lock:
            item = self.items[item_id]
            return self._encode_cursor(item, {"v": item.version})

    def inject_mutation_error(self, times: int = 1) -> None:
        """The next ``times`` mid-run /transactions/sync requests fail as if the data changed."""
        with self.lock:
            self.mutation_errors_pending += times

    def break_item(self, item_id: str, code: str = "ITEM_LOGIN_REQUIRED") -> None:
        """Put the Item in an error state: the user changed their bank password
        (``ITEM_LOGIN_REQUIRED``) or must act at the bank or in Link
        (``ITEM_LOCKED``, ``INVALID_CREDENTIALS``, ``USER_SETUP_REQUIRED``,
        ``INSUFFICIENT_CREDENTIALS``, ... with Plaid's messages), or the bank is
        down (``INSTITUTION_DOWN``, ``INSTITUTION_NOT_RESPONDING``); ``mend_item`` ends it."""
        if code.startswith("INSTITUTION_"):
            error = PlaidAPIError(400, "INSTITUTION_ERROR", code, "this financial institution is not currently "
                                  "responding to requests. We apologize for the inconvenience.",
                                  "Please try connecting a different account.")
        else:
            message, display = ITEM_ERROR_MESSAGES.get(code, ITEM_ERROR_MESSAGES["ITEM_LOGIN_REQUIRED"])
            error = PlaidAPIError(400, "ITEM_ERROR", code, message, display)
        with self.lock:
            self.items[item_id].error = error.body("")

    def mend_item(self, item_id: str) -> None:
        with self.lock:
            self.items[item_id].error = None

    def limit(self, path: str, capacity: int, per_second: float) -> None:
        """Replace the per-Item limit of ``path`` (existing buckets are dropped)."""
        with self.lock:
            self.rate_limits[path] = (capacity, per_second)
            self.buckets = {k: v for k, v in self.buckets.items() if k[1] != path}

    def throttle(self, path: str, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` answer 429 whatever the bucket says."""
        with self.lock:
            self.throttled[path] += times

    def rotate_key(self) -> str:
        """Expire the current signing key (if any) and start signing with a new one."""
        now = int(time.time())
        with self.lock:
            if getattr(self, "current_kid", None):
                self.keys[self.current_kid].expired_at = now
            key = SigningKey(str(uuid.uuid4()), ec.generate_private_key(ec.SECP256R1()), now)
            self.keys[key.kid] = key
            self.current_kid = key.kid
            return key.kid

    def webhook(self, item_id: str, webhook_type: str, webhook_code: str, **fields: Any) -> dict[str, Any]:
        """A webhook body as Plaid sends it, checked against the spec's webhook schema."""
        payload: dict[str, Any] = {"webhook_type": webhook_type, "webhook_code": webhook_code, "item_id": item_id,
                                   "environment": self.environment}
        if webhook_code == "SYNC_UPDATES_AVAILABLE":
            payload.update(initial_update_complete=True, historical_update_complete=True)
        elif webhook_type == "TRANSACTIONS" and webhook_code != "TRANSACTIONS_REMOVED":
            payload.update(new_transactions=0, error=None)
        elif webhook_code == "TRANSACTIONS_REMOVED":
            payload.update(removed_transactions=[], error=None)
        elif webhook_code == "ERROR":
            payload["error"] = self.items[item_id].error if item_id in self.items else None
        payload.update(fields)
        problem = self.validator.webhook_problem(payload) if self.validator else None
        if problem:
            raise ValueError(f"off-spec {webhook_type}/{webhook_code} webhook: {problem}")
        return payload

    def signed_delivery(self, payload: dict[str, Any], iat: int | None = None,
                        kid: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The raw body and headers of a delivery, signed like Plaid's (ES256 JWT over the body's SHA-256)."""
        body = json.dumps(payload, indent=2).encode()
        key = self.keys[kid or self.current_kid]
        claims = {"iat": int(time.time()) if iat is None else iat,
                  "request_body_sha256": hashlib.sha256(body).hexdigest()}
        token = jwt.encode(claims, key.private, algorithm="ES256", headers={"kid": key.kid})
        return body, {"Plaid-Verification": token, "Content-Type": "application/json"}

    def send_webhook(self, url: str, payload: dict[str, Any], client: Any = None, **sign: Any) -> Any:
        """Sign and POST a delivery with ``client`` (an httpx or TestClient; default: httpx)."""
        body, headers = self.signed_delivery(payload, **sign)
        return (client or httpx).post(url, content=body, headers=headers)

    def fire(self, item_id: str, webhook_type: str, webhook_code: str, client: Any = None, **fields: Any) -> Any:
        """Deliver a webhook to the URL the Item was linked with, as Plaid does."""
        url = self.items[item_id].webhook
        if not url:
            raise ValueError(f"item {item_id} has no webhook URL")
        return self.send_webhook(url, self.webhook(item_id, webhook_type, webhook_code, **fields), client)

    # -- data

    def _id(self) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=37))

    def _institutions(self, count: int) -> dict[str, dict[str, Any]]:
        rows = list(SANDBOX_INSTITUTIONS) + [(f"ins_{200000 + n}", f"Test Bank {n}", False, "US")
                                             for n in range(max(0, count - len(SANDBOX_INSTITUTIONS)))]
        return {iid: {"institution_id": iid, "name": name, "country_codes": [country],
                      "products": ["assets", "auth", "balance", "transactions", "identity"],
                      "routing_numbers": ["011000138"] if country == "US" else [], "dtc_numbers": [],
                      "oauth": oauth, "url": None, "primary_color": None, "logo": None}
                for iid, name, oauth, country in rows[:count]}

    def _account(self, name: str, official: str, mask: str, kind: str, subtype: str, available: float | None,
                 current: float, limit: float | None) -> dict[str, Any]:
        return {"account_id": self._id(), "name": name, "official_name": official, "mask": mask, "type": kind,
                "subtype": subtype, "holder_category": "personal",
                "balances": {"available": available, "current": current, "limit": limit,
                             "iso_currency_code": "USD", "unofficial_currency_code": None}}

    def _transaction(self, item: Item, n: int) -> dict[str, Any]:
        merchant, primary, detailed, channel = MERCHANTS[n % len(MERCHANTS)]
        day = (date(2024, 6, 30) - timedelta(days=n // 3)).isoformat()
        return {
            "transaction_id": self._id(), "account_id": item.accounts[n % 2]["account_id"],
            "amount": round(3.5 + (n * 7.31) % 480, 2), "iso_currency_code": "USD", "unofficial_currency_code": None,
            "check_number": None, "date": day, "datetime": None, "authorized_date": day, "authorized_datetime": None,
            "name": merchant.upper(), "merchant_name": merchant, "merchant_entity_id": None, "logo_url": None,
            "website": None, "account_owner": None, "pending": False, "pending_transaction_id": None,
            "payment_channel": channel, "transaction_code": None, "transaction_type": "place",
            "location": dict.fromkeys(("address", "city", "region", "postal_code", "country", "lat", "lon",
                                       "store_number")),
            "payment_meta": dict.fromkeys(("by_order_of", "payee", "payer", "payment_method", "payment_processor",
                                           "ppd_id", "reason", "reference_number")),
            "personal_finance_category": {"primary": primary, "detailed": detailed, "confidence_level": "VERY_HIGH"},
            "personal_finance_category_icon_url": f"https://plaid-category-icons.plaid.com/PFC_{primary}.png",
            "counterparties": [{"name": merchant, "type": "merchant", "logo_url": None, "website": None,
                                "entity_id": None, "confidence_level": "VERY_HIGH"}],
        }

    def _item_json(self, item: Item) -> dict[str, Any]:
        institution = self.institutions.get(item.institution_id, {})
        return {"item_id": item.item_id, "institution_id": item.institution_id,
                "institution_name": institution.get("name"), "webhook": item.webhook, "auth_method": None,
                "error": item.error, "available_products": ["balance", "identity"],
                "billed_products": item.products, "products": item.products, "consented_products": item.products,
                "consent_expiration_time": None, "update_type": "background"}


def create_app(transactions: int = 120, institutions: int = 40, rate_limits: dict[str, tuple[int, float]] | None = None,
               validate: bool = True, spec_path: str | None = None, **options: Any) -> FastAPI:
    """The fake Plaid API. ``transactions``: history each new Item starts with;
    ``rate_limits``: ``{path: (burst, per_second)}`` per Item (default: Plaid's per-minute
    limits); ``validate``: check requests and answers against the official spec."""
    plaid = FakePlaid(transactions=transactions, institutions=institutions, rate_limits=rate_limits,
                      validator=spec_validator(spec_path) if validate else None, **options)
    app = FastAPI(title="fake Plaid")
    app.state.plaid = plaid

    @app.post("/fake/link/complete")
    async def complete_link(request: Request) -> JSONResponse:
        """Not Plaid's: what the user's Link widget does, for a link token the
        hub created (``{"link_token", "institution_id"}``): the public token its
        onSuccess hands the browser, for ``POST /link/plaid/exchange``."""
        try:
            body = json.loads(await request.body() or b"{}")
            token = plaid.create_public_token(body.get("institution_id") or "ins_109508",
                                              link_token=str(body["link_token"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse({"error": "send {\"link_token\": a link token of this fake, \"institution_id\"}"},
                                status_code=400)
        return JSONResponse({"public_token": token})

    @app.post("/{path:path}")
    async def endpoint(path: str, request: Request) -> JSONResponse:
        return plaid.handle("/" + path, dict(request.headers), await request.body(), str(request.base_url))

    return app
