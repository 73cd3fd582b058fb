"""Plaid (API version 2020-09-14): bank accounts, balances, transactions and
institutions, connected with Plaid Link. Every endpoint is ``POST`` with JSON;
the operator's ``client_id``/``secret`` go in headers, the connection's
``access_token`` in the body. Its fake server is :mod:`hub_plaid.testing`.

Transactions come from ``/transactions/sync``. Plaid pages a *run* of changes
from a start cursor and answers ``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION``
when the data moved under the run; the run must then restart from its start
cursor. Because the core (or the API client) drives the page loop, the opaque
cursor carries the run: its start cursor, the current Plaid cursor, the page
size, the number of pages delivered and a digest chained over their contents.
On the error the plugin replays the restarted run up to the pages delivered:
when they are unchanged it continues from there, so nothing is lost or
repeated; when they changed it starts the run over, so nothing is lost and
records the client already has come again with their current content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from datetime import datetime, timezone
from typing import Any

import jwt

from hub import hookimpl
from hub.types import (
    CONNECTION_BROKEN,
    CONNECTION_REPAIRED,
    CONNECTION_WARNING,
    Action,
    AuthFailed,
    ConfigurationError,
    Credentials,
    EntityField,
    EntitySchema,
    NotFound,
    Page,
    ProviderError,
    ProviderInfo,
    ProviderUnavailable,
    RateLimit,
    RequestAuth,
    ValidationFailed,
    WebhookEvent,
    WebhookRejected,
)

API_VERSION = "2020-09-14"
ENVIRONMENTS = ("sandbox", "development", "production")
MAX_COUNT = 500
LOOKUP_PAGES = 40
#: How long a verification key is trusted without asking Plaid again: a key
#: Plaid expires (a rotation) stops verifying deliveries within this time.
KEY_CACHE_SECONDS = 300
#: Look-ups of keys not in the cache, per minute, connection and process: a
#: forged delivery names any kid it likes, and each look-up is a call to
#: Plaid (on the Item's budget). Kids Plaid refused are remembered as long.
KEY_LOOKUPS_PER_MINUTE = 10
#: How far ahead of the hub's clock a delivery's signing time (the JWT's
#: ``iat``) may be: Plaid's clock and the hub's differ by a second or two.
IAT_LEEWAY_SECONDS = 60
CURSOR_PREFIX = "hub1."
#: Item errors only the Item's user can end, by logging in again through Link's
#: update mode (a locked account, changed credentials or MFA, consent for too
#: little, setup unfinished at the bank...). Not every ITEM_ERROR: the Item's
#: first data not ready yet (PRODUCT_NOT_READY) passes by itself.
USER_ACTION_ERRORS = {"ITEM_LOGIN_REQUIRED", "ITEM_LOCKED", "INVALID_CREDENTIALS", "INVALID_MFA",
                      "INVALID_SEND_METHOD", "INVALID_UPDATED_USERNAME", "INSUFFICIENT_CREDENTIALS",
                      "USER_SETUP_REQUIRED", "MFA_NOT_SUPPORTED", "NO_ACCOUNTS", "USER_INPUT_TIMEOUT"}
#: The connection does not work until someone acts: AuthFailed, which marks it ``error``.
AUTH_ERRORS = USER_ACTION_ERRORS | {"INVALID_ACCESS_TOKEN", "INVALID_PUBLIC_TOKEN", "ITEM_NOT_FOUND",
                                    "ACCESS_NOT_GRANTED", "USER_PERMISSION_REVOKED"}
UPDATE_MODE_HINT = "; the user must reconnect through Link's update mode"
#: Answered 400 but passing: the bank is down or slow, or the Item's first data is not ready yet.
UNAVAILABLE_ERRORS = {"INSTITUTION_DOWN", "INSTITUTION_NOT_RESPONDING", "INSTITUTION_NOT_AVAILABLE",
                      "PRODUCT_NOT_READY"}

INFO = ProviderInfo(
    name="plaid",
    label="Plaid",
    logo="https://plaid.com/favicon.ico",
    category="banking",
    auth_type="link",
    description="Bank accounts, balances, transactions and institutions, connected with Plaid Link.",
    urls={"api": "https://{environment}.plaid.com"},
    # An overall per-Item pace; 429s are retried.
    rate_limit=RateLimit(requests_per_second=0.8, burst=10),
    # Plaid limits some endpoints per Item per minute; the core counts each.
    endpoint_rate_limits={
        "/accounts/balance/get": RateLimit.per(5, 60),
        "/accounts/get": RateLimit.per(15, 60),
        "/transactions/sync": RateLimit.per(50, 60),
    },
    # ...and per client (every Item of the app) per minute.
    rate_limits=(
        RateLimit.per(1_200, 60, endpoint="/accounts/balance/get", scope="app"),
        RateLimit.per(15_000, 60, endpoint="/accounts/get", scope="app"),
        RateLimit.per(2_500, 60, endpoint="/transactions/sync", scope="app"),
        RateLimit.per(5_000, 60, endpoint="/item/get", scope="app"),
        RateLimit.per(2_000, 60, endpoint="/item/remove", scope="app"),
    ),
    supports_webhooks=True,
    config_fields=(
        EntityField("environment", "Environment", description="sandbox, development or production; "
                    "defaults to the operator's HUB_PLAID_ENVIRONMENT, else sandbox"),
        EntityField("item_id", "Item ID", readonly=True),
        EntityField("institution_id", "Institution ID", readonly=True),
        EntityField("institution_name", "Institution", readonly=True),
    ),
    credential_fields=(EntityField("access_token", "Access token", required=True, readonly=True),),
)


def _fields(**types: str) -> tuple[EntityField, ...]:
    return tuple(EntityField(name, type=kind, readonly=True) for name, kind in types.items())  # type: ignore[arg-type]


def _object(name: str, **types: str) -> EntityField:
    """An object field with its sub-fields (what a mapping's ``name.sub`` path may name)."""
    return EntityField(name, type="object", readonly=True, fields=_fields(**types))


# (The official spec's AccountBase, AccountBalance, Location and PersonalFinanceCategory.)
ACCOUNT = _fields(account_id="string", name="string", official_name="string", mask="string", type="string",
                  subtype="string", holder_category="string", persistent_account_id="string",
                  verification_status="string") + (
    _object("balances", available="number", current="number", limit="number", iso_currency_code="string",
            unofficial_currency_code="string", last_updated_datetime="datetime"),)
SCHEMAS = [
    # (Filters: what Plaid's calls take; another is refused rather than answered unfiltered.)
    EntitySchema("accounts", "Accounts", ACCOUNT, id_field="account_id", filters=(),
                 description="The Item's accounts with cached balances (/accounts/get)."),
    EntitySchema("balances", "Balances", ACCOUNT, id_field="account_id", filters=(),
                 description="The accounts with real-time balances (/accounts/balance/get)."),
    EntitySchema("transactions", "Transactions", _fields(
        transaction_id="string", account_id="string", amount="number", iso_currency_code="string",
        unofficial_currency_code="string", date="date", datetime="datetime", authorized_date="date",
        authorized_datetime="datetime", name="string", merchant_name="string", merchant_entity_id="string",
        pending="boolean", pending_transaction_id="string", payment_channel="string", check_number="string",
        account_owner="string", transaction_code="string", logo_url="string", website="string",
        personal_finance_category_icon_url="string", payment_meta="object", counterparties="array") + (
        _object("personal_finance_category", primary="string", detailed="string", confidence_level="string",
                version="string"),
        _object("location", address="string", city="string", region="string", postal_code="string",
                country="string", lat="number", lon="number", store_number="string")),
        id_field="transaction_id", filters=(),
        description="Changes from /transactions/sync: added and modified records, removed ids as deletions."),
    EntitySchema("institutions", "Institutions", _fields(
        institution_id="string", name="string", products="array", country_codes="array",
        routing_numbers="array", oauth="boolean", url="string", primary_color="string", logo="string"),
        id_field="institution_id", filters=("country_codes",),
        description="Institutions Plaid supports (/institutions/get)."),
]

ACTIONS = [
    Action("categories", "List categories", "Plaid's transaction categories (/categories/get).", readonly=True),
    Action("institution", "Look up an institution", "One institution by id (/institutions/get_by_id).",
           params=(EntityField("institution_id", "Institution ID", required=True),), readonly=True),
    Action("refresh_transactions", "Refresh transactions", "Ask Plaid to fetch new transactions now "
           "(/transactions/refresh); a SYNC_UPDATES_AVAILABLE webhook follows."),
]
# No remove_item action: an Item removed while its connection stays leaves a connection that can
# never work again (update mode needs the live access token); deleting the connection removes it.

WEBHOOK_ENTITIES = {("TRANSACTIONS", None): "transactions", ("ITEM", "NEW_ACCOUNTS_AVAILABLE"): "accounts"}
#: ITEM webhooks about the Item itself: it needs its user again (Link's update
#: mode), or it works again after the user fixed it elsewhere.
ITEM_STATUS_WEBHOOKS = {"ERROR": CONNECTION_BROKEN, "USER_PERMISSION_REVOKED": CONNECTION_BROKEN,
                        "LOGIN_REPAIRED": CONNECTION_REPAIRED}
#: ITEM webhooks saying the Item works, but will stop at a time unless its user
#: goes through Link's update mode before: a warning on the connection.
ITEM_WARNING_WEBHOOKS = {"PENDING_EXPIRATION": "consent_expiration_time", "PENDING_DISCONNECT": "disconnect_time"}

# Keyed by (environment, kid): sandbox and production sign with keys of their own.
_verification_keys: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
_key_lookups: dict[str | None, list[float]] = {}
_refused_kids: dict[tuple[str, str], float] = {}


class MutationDuringPagination(ProviderUnavailable):
    """Plaid's data changed during a /transactions/sync run; retrying the same cursor is safe."""

    code = "plaid_mutation_during_pagination"


# ---------------------------------------------------------------- declarations


@hookimpl
def provider_info():
    return INFO


@hookimpl
def entity_schemas():
    return SCHEMAS


@hookimpl
def provider_actions():
    return ACTIONS


# ---------------------------------------------------------------- requests


def _environment(ctx) -> str:
    env = ctx.config.get("environment") or ctx.settings.get("environment") or "sandbox"
    if env not in ENVIRONMENTS:
        raise ConfigurationError(f"Plaid environment must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
    return env


def _country_codes(ctx, wanted: str | list[str] | None = None) -> list[str]:
    codes = wanted or ctx.settings.get("country_codes") or "US"
    if not isinstance(codes, (str, list)):
        raise ValidationFailed("country_codes must be a list of country codes, or one comma-separated text",
                               code="invalid_value")
    return [str(c).strip().upper() for c in (codes.split(",") if isinstance(codes, str) else codes) if str(c).strip()]


async def _post(ctx, path: str, idempotent: bool = True, **body: Any) -> dict[str, Any]:
    # Plaid reads with POST; the calls made here read, make tokens or remove an
    # item, all harmless to re-send after a 5xx, but the public token's exchange.
    return await ctx.http.json("POST", ctx.url(path=path, environment=_environment(ctx)), json=body,
                               idempotent=idempotent)


async def _item_post(ctx, path: str, **body: Any) -> dict[str, Any]:
    token = ctx.credentials.get("access_token")
    if not token:
        raise AuthFailed("the connection has no Plaid access token: link the account again")
    return await _post(ctx, path, access_token=token, **body)


@hookimpl
def request_auth(ctx):
    return RequestAuth(headers={"PLAID-CLIENT-ID": ctx.setting("client_id"), "PLAID-SECRET": ctx.setting("secret"),
                                "Plaid-Version": API_VERSION})


@hookimpl
def describe_error(response):
    try:
        body = response.json()
        code = body["error_code"]
        message = f"Plaid {code}: {body['error_message']} (request_id {body.get('request_id')})"
    except (ValueError, KeyError, TypeError):
        return None
    if code in AUTH_ERRORS:
        return AuthFailed(message + (UPDATE_MODE_HINT if code in USER_ACTION_ERRORS else ""))
    if code in UNAVAILABLE_ERRORS:
        return ProviderUnavailable(f"{message}; try again later")
    if code == "INVALID_API_KEYS":
        return ConfigurationError(f"{message}; check HUB_PLAID_CLIENT_ID, HUB_PLAID_SECRET and the environment")
    if code == "INVALID_INSTITUTION":
        return NotFound(message)
    if code == "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION":
        return MutationDuringPagination(message)
    return message


# ---------------------------------------------------------------- auth


@hookimpl
async def create_link_token(ctx, user_id, options):
    body = {
        "client_name": options.get("client_name") or ctx.settings.get("client_name") or "hub",
        "language": options.get("language") or "en",
        "country_codes": _country_codes(ctx, options.get("country_codes")),
        "user": {"client_user_id": user_id},
        "products": options.get("products") or ["transactions"],
    }
    if webhook := options.get("webhook") or ctx.settings.get("webhook") or ctx.webhook_url:
        body["webhook"] = webhook
    if redirect_uri := options.get("redirect_uri") or ctx.settings.get("redirect_uri"):
        body["redirect_uri"] = redirect_uri
    if access_token := ctx.credentials.get("access_token"):
        # Repairing a connection (ITEM_LOGIN_REQUIRED): Link's update mode, on the Item it has.
        body["access_token"] = access_token
        del body["products"]
    result = await _post(ctx, "/link/token/create", **body)
    return {"link_token": result["link_token"], "expiration": result.get("expiration")}


@hookimpl
async def exchange_public_token(ctx, public_token, metadata, link_token):
    # The client secret is the hub's, shared by every tenant: a public token is exchanged only
    # if the organization's own link token made it, or another's leaked token would connect here.
    answer = await _post(ctx, "/link/token/get", link_token=link_token)
    if "link_sessions" not in answer:
        raise ValidationFailed("Plaid reported no Link sessions for this link_token, so the public token cannot be "
                               "checked against it (Plaid keeps them six hours after a session; ask Plaid to "
                               "enable Link session data for the client)", code="invalid_public_token")
    sessions = answer.get("link_sessions") or []
    made = {result.get("public_token") for session in sessions if isinstance(session, dict)
            for result in ((session.get("results") or {}).get("item_add_results") or []) if isinstance(result, dict)}
    made |= {(session.get("on_success") or {}).get("public_token") for session in sessions if isinstance(session, dict)}
    if public_token not in made:
        raise ValidationFailed("the public token was not made by a Link session of this link_token: exchange it "
                               "with the link_token its Link widget ran with", code="invalid_public_token")
    # Link's onSuccess metadata only names the institution: a malformed one is left out
    # rather than failing after the exchange (the public token works once).
    institution = metadata.get("institution")
    institution = {k: v for k, v in institution.items() if isinstance(v, str)} if isinstance(institution, dict) else {}
    try:
        # Not re-sent after a 5xx or a timeout: a public token is exchanged once, and Plaid takes
        # no idempotency key for it, so a re-send of an exchange made would only be refused.
        result = await _post(ctx, "/item/public_token/exchange", idempotent=False, public_token=public_token)
    except ProviderUnavailable as exc:
        if not exc.maybe_applied:
            raise
        # Maybe exchanged, its access token lost with the answer: the Item cannot be reached.
        raise ProviderUnavailable(f"{exc.message}. Plaid may have exchanged the public token, but its answer "
                                  "(the access token) was lost, and a public token is exchanged only once: run "
                                  "Link again for a new one", code="exchange_outcome_unknown",
                                  maybe_applied=True) from None
    except AuthFailed as exc:
        if "INVALID_PUBLIC_TOKEN" not in exc.message:
            raise
        # The token's fault (used already, or expired after 30 minutes), not the hub's keys'.
        raise ValidationFailed(f"{exc.message}: a public token is exchanged once, within 30 minutes of its Link "
                               "session; run Link again", code="invalid_public_token") from None
    config = {"item_id": result["item_id"], "environment": _environment(ctx),
              "institution_id": institution.get("institution_id"), "institution_name": institution.get("name")}
    return Credentials(secrets={"access_token": result["access_token"]},
                       config={k: v for k, v in config.items() if v}, webhook_key=result["item_id"])


@hookimpl
async def test_connection(ctx):
    item = (await _item_post(ctx, "/item/get"))["item"]
    error = item.get("error") or {}
    code = error.get("error_code")
    if code in AUTH_ERRORS:
        raise AuthFailed(f"Plaid {code}: {error.get('error_message')}"
                         + (UPDATE_MODE_HINT if code in USER_ACTION_ERRORS else ""))
    if error.get("error_type") == "INSTITUTION_ERROR":
        # The bank is down or slow: whether the Item works cannot be told now.
        raise ProviderUnavailable(f"Plaid {code}: {error.get('error_message')}; try again later")
    return {"account": item["item_id"], "item_id": item["item_id"], "institution_id": item.get("institution_id"),
            "institution_name": item.get("institution_name"), "products": item.get("billed_products", []),
            "environment": _environment(ctx), "error": error.get("error_code")}


@hookimpl
async def disconnect(ctx):
    if ctx.extra.get("account_shared"):
        return False  # the item is another connection's too
    await _item_post(ctx, "/item/remove")
    return True


# ---------------------------------------------------------------- records


@hookimpl
async def list_records(ctx, entity, cursor, page_size, filters):
    if entity == "transactions":
        return await _transactions(ctx, cursor, page_size)
    if entity == "institutions":
        return await _institutions(ctx, cursor, page_size, filters)
    return Page(records=await _accounts(ctx, entity))


@hookimpl
async def get_record(ctx, entity, record_id):
    if entity == "institutions":
        body = await _post(ctx, "/institutions/get_by_id", institution_id=record_id,
                           country_codes=_country_codes(ctx))
        return body["institution"]
    if entity == "transactions":
        record = await _find_transaction(ctx, record_id)
    else:
        record = next((a for a in await _accounts(ctx, entity) if a["account_id"] == record_id), None)
    if record is None:
        raise NotFound(f"Plaid has no {entity} record {record_id}")
    return record


async def _accounts(ctx, entity: str) -> list[dict[str, Any]]:
    path = {"accounts": "/accounts/get", "balances": "/accounts/balance/get"}.get(entity)
    if path is None:
        raise NotFound(f"Plaid has no entity {entity!r}")
    return (await _item_post(ctx, path))["accounts"]


async def _institutions(ctx, cursor: str | None, page_size: int, filters: dict[str, str]) -> Page:
    """Plaid pages institutions by offset. The cursor also names the last
    institution given (``offset:id``), and the next page is asked from it: if
    it is no longer there (one was removed or added before it), the list
    moved and an offset would skip or repeat one, so the cursor is refused
    (sync starts its pass over rather than mark a skipped one deleted)."""
    offset, last = _institutions_position(cursor)
    count = min(page_size, MAX_COUNT)
    start = offset - 1 if last else offset
    body = await _post(ctx, "/institutions/get", count=min(count + 1, MAX_COUNT) if last else count, offset=start,
                       country_codes=_country_codes(ctx, filters.get("country_codes")))
    records = body["institutions"]
    if last:
        if not records or records[0].get("institution_id") != last:
            raise ValidationFailed("Plaid's list of institutions changed since this cursor was handed out; "
                                   "list them again from the start", code="invalid_cursor")
        records = records[1:]
    end = offset + len(records)
    more = records and end < body["total"]
    return Page(records=records, next_cursor=f"{end}:{records[-1]['institution_id']}" if more else None)


def _institutions_position(cursor: str | None) -> tuple[int, str | None]:
    """(offset, id of the institution just before it) from an institutions
    cursor; a bare offset (handed out before ids were added) has no id."""
    if cursor is None:
        return 0, None
    digits, colon, last = cursor.partition(":")
    if not (digits.isascii() and digits.isdigit()) or (colon and (not last or digits == "0")) or len(digits) > 9:
        raise ValidationFailed("invalid cursor", code="invalid_cursor")
    return int(digits), last or None


async def _sync(ctx, cursor: str | None, count: int) -> dict[str, Any]:
    return await _item_post(ctx, "/transactions/sync", count=count, **({"cursor": cursor} if cursor else {}))


async def _transactions(ctx, cursor: str | None, page_size: int) -> Page:
    run = _decode_run(cursor, min(page_size, MAX_COUNT))
    restarted = False
    try:
        body = await _sync(ctx, run["at"], run["count"])
    except MutationDuringPagination:
        run, restarted = await _replay(ctx, run)
        body = await _sync(ctx, run["at"], run["count"])
    _check_sync_page(body, run["at"])
    records = body["added"] + body["modified"]
    deleted = [r["transaction_id"] for r in body["removed"]]
    if not body["has_more"]:
        return Page(records=records, deleted_ids=deleted, watermark=body["next_cursor"], restarted=restarted)
    run = {**run, "at": body["next_cursor"], "pages": run["pages"] + 1, "digest": _chain(run["digest"], body)}
    return Page(records=records, deleted_ids=deleted, next_cursor=_encode_run(run), restarted=restarted)


def _check_sync_page(body: Any, asked_at: str | None) -> None:
    """A /transactions/sync answer the listing can go on from: lists of
    transactions, a boolean ``has_more`` and, while there is more, a cursor
    other than the one asked with (the same one again would page forever)."""
    if not (isinstance(body, dict) and all(isinstance(body.get(k), list) for k in ("added", "modified", "removed"))
            and isinstance(body.get("has_more"), bool) and isinstance(body.get("next_cursor"), (str, type(None)))):
        raise ProviderError("Plaid answered /transactions/sync without its lists, has_more and next_cursor")
    if any(not isinstance(r, dict) or not isinstance(r.get("transaction_id"), str) for r in body["removed"]):
        raise ProviderError("Plaid reported a removed transaction without its transaction_id")
    if body["has_more"] and (not body["next_cursor"] or body["next_cursor"] == asked_at):
        raise ProviderError("Plaid said more transactions follow but gave no new cursor to them")


async def _replay(ctx, run: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The run restarted from its start cursor, positioned after the pages the
    client already has when they are unchanged.

    Else the listing starts over from the item's first transaction, and says
    so (``Page.restarted``): a transaction the earlier pages added and Plaid
    removed since is in neither ``added`` nor ``removed`` of a run from the
    start cursor, so only a full listing shows it gone.
    """
    at, digest = run["start"], ""
    for _ in range(run["pages"]):
        body = await _sync(ctx, at, run["count"])
        _check_sync_page(body, at)
        digest, at = _chain(digest, body), body["next_cursor"]
        if not body["has_more"]:
            break
    if digest == run["digest"]:
        return {**run, "at": at}, False
    return {**run, "start": None, "at": None, "pages": 0, "digest": ""}, True


def _chain(digest: str, body: dict[str, Any]) -> str:
    page = json.dumps([body["added"], body["modified"], body["removed"]], sort_keys=True)
    return hashlib.sha256((digest + page).encode()).hexdigest()[:32]


def _encode_run(run: dict[str, Any]) -> str:
    return CURSOR_PREFIX + base64.urlsafe_b64encode(json.dumps(run, separators=(",", ":")).encode()).decode()


def _decode_run(cursor: str | None, count: int) -> dict[str, Any]:
    """A run from our opaque cursor; ``None`` or a raw Plaid cursor (a stored
    watermark) starts a new run there."""
    if not cursor or not cursor.startswith(CURSOR_PREFIX):
        return {"start": cursor, "at": cursor, "count": count, "pages": 0, "digest": ""}
    try:
        run = json.loads(base64.urlsafe_b64decode(cursor[len(CURSOR_PREFIX):].encode()))
        if not isinstance(run, dict) or not {"start", "at", "count", "pages", "digest"} <= set(run):
            raise ValueError
        positions_ok = all(run[k] is None or isinstance(run[k], str) for k in ("start", "at"))
        numbers_ok = all(isinstance(run[k], int) and not isinstance(run[k], bool) and run[k] >= 0
                         for k in ("count", "pages"))
        if not (positions_ok and numbers_ok and isinstance(run["digest"], str)):
            raise ValueError
    except (ValueError, binascii.Error):
        raise ValidationFailed("invalid cursor", code="invalid_cursor") from None
    return run


async def _find_transaction(ctx, transaction_id: str) -> dict[str, Any] | None:
    cursor = None
    for _ in range(LOOKUP_PAGES):
        body = await _sync(ctx, cursor, MAX_COUNT)
        found = next((t for t in body["added"] + body["modified"] if t["transaction_id"] == transaction_id), None)
        if found or not body["has_more"]:
            return found
        cursor = body["next_cursor"]
    return None


# ---------------------------------------------------------------- actions


@hookimpl
async def run_action(ctx, action, params):
    if action == "categories":
        return {"categories": (await _post(ctx, "/categories/get"))["categories"]}
    if action == "institution":
        return {"institution": await get_record(ctx=ctx, entity="institutions", record_id=str(params["institution_id"]))}
    if action == "refresh_transactions":
        await _item_post(ctx, "/transactions/refresh")
        return {"refreshed": True}
    raise NotFound(f"Plaid has no action {action!r}")


# ---------------------------------------------------------------- webhooks


@hookimpl
def webhook_connection_key(request):
    try:
        item_id = json.loads(request.body).get("item_id")
    except (ValueError, AttributeError, RecursionError):
        raise WebhookRejected("malformed delivery body") from None
    return item_id if isinstance(item_id, str) else None


@hookimpl
async def verify_webhook(ctx, request):
    """Verify ``Plaid-Verification`` and turn the delivery into hub events.

    Plaid sends no event id, and a notification's body repeats word for word
    (every ``SYNC_UPDATES_AVAILABLE`` of an Item is the same), so the dedup key
    is the signed request: the body's item, type and code with the verification
    JWT, which Plaid signs afresh (its ``iat``) for each notification. A
    re-delivery of the same signed request is a duplicate; two notifications
    never are. Applying them twice is harmless: they ask for an incremental
    ``/transactions/sync``."""
    claims = await _verified_claims(ctx, request)
    try:
        body = json.loads(request.body)
        kind, code, item_id = body["webhook_type"], body["webhook_code"], body.get("item_id")
        removed = body.get("removed_transactions") or []
        if not (isinstance(kind, str) and isinstance(code, str) and isinstance(item_id, (str, type(None)))
                and isinstance(removed, list) and all(isinstance(tid, str) and tid for tid in removed)):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise WebhookRejected("malformed delivery body") from None
    # (A connection made from a typed access token has its Item as its account only.)
    if item_id and (ctx.config.get("item_id") or ctx.account) not in (None, item_id):
        raise WebhookRejected("the delivery is for another Plaid item")
    _check_age(ctx, claims)  # (last: its answer, webhook_stale, is the only one that tells a connection exists)
    # The JWT covers the body (request_body_sha256) and when it was signed (iat).
    digest = hashlib.sha256(f"{item_id}|{kind}|{code}|{request.header('Plaid-Verification')}".encode()).hexdigest()
    occurred = datetime.fromtimestamp(claims["iat"], timezone.utc)
    if (kind, code) == ("TRANSACTIONS", "TRANSACTIONS_REMOVED"):
        return [WebhookEvent(dedup_key=f"{digest}:{tid}", type="transaction.deleted", entity="transactions",
                             action="deleted", record_id=tid, occurred_at=occurred, raw=body)
                for tid in removed]
    if kind == "ITEM" and code in ITEM_STATUS_WEBHOOKS:
        return [WebhookEvent(dedup_key=digest, type=f"item.{code.lower()}", action=ITEM_STATUS_WEBHOOKS[code],
                             occurred_at=occurred, raw=body, message=_item_problem(code, body.get("error")))]
    if kind == "ITEM" and code in ITEM_WARNING_WEBHOOKS:
        return [WebhookEvent(dedup_key=digest, type=f"item.{code.lower()}", action=CONNECTION_WARNING,
                             occurred_at=occurred, raw=body, message=_item_warning(code, body))]
    entity = WEBHOOK_ENTITIES.get((kind, code)) or WEBHOOK_ENTITIES.get((kind, None))
    event_type = f"{entity[:-1]}.changed" if entity else f"{kind}.{code}".lower()
    return [WebhookEvent(dedup_key=digest, type=event_type, entity=entity, action="changed",
                         occurred_at=occurred, raw=body)]


def _item_problem(code: str, error: Any) -> str | None:
    """What an ITEM webhook says is wrong with the Item, for the connection's ``last_error``."""
    if code == "LOGIN_REPAIRED":
        return None
    if isinstance(error, dict) and error.get("error_code"):
        return (f"Plaid {error['error_code']}: {error.get('error_message') or error.get('display_message') or ''}"
                + UPDATE_MODE_HINT).replace(": ;", ";")
    return f"Plaid {code}: the user must reconnect through Link's update mode"


def _item_warning(code: str, body: dict[str, Any]) -> str:
    """What a PENDING_EXPIRATION or PENDING_DISCONNECT webhook warns of, with its time."""
    when = body.get(ITEM_WARNING_WEBHOOKS[code])
    when = f"at {when}" if isinstance(when, str) and when else "soon"
    if code == "PENDING_EXPIRATION":
        what = f"the user's consent to access this Item expires {when}"
    else:
        reason = body.get("reason")
        what = f"Plaid will disconnect this Item {when}" + (f" ({reason})" if isinstance(reason, str) else "")
    return f"Plaid {code}: {what}; the user must go through Link's update mode before then to keep it working"


async def _verified_claims(ctx, request) -> dict[str, Any]:
    """Plaid-Verification: an ES256 JWT over the body's SHA-256, signed with a key Plaid serves by kid.
    Its age is :func:`_check_age`'s, once the delivery is known to be this connection's."""
    token = request.header("Plaid-Verification")
    if not token:
        raise WebhookRejected("missing Plaid-Verification header")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise WebhookRejected("malformed Plaid-Verification header") from None
    if header.get("alg") != "ES256" or not header.get("kid"):
        raise WebhookRejected("Plaid-Verification must be an ES256 JWT with a kid")
    key = await _verification_key(ctx, str(header["kid"]))
    try:
        # iat is checked below: PyJWT's own check allows no clock skew at all, and a delivery
        # signed a second ahead of the hub's clock would be refused as a bad signature.
        claims = jwt.decode(token, key, algorithms=["ES256"], options={"require": ["iat"], "verify_iat": False})
    except jwt.PyJWTError:
        raise WebhookRejected("Plaid-Verification signature does not verify") from None
    # The body is part of what is signed: checked before the age, which alone is
    # answered as it is (webhook_stale) and must not be to a forged delivery.
    body_hash = hashlib.sha256(request.body).hexdigest()
    if not hmac.compare_digest(body_hash, str(claims.get("request_body_sha256", ""))):
        raise WebhookRejected("the body does not match its signature")
    iat = claims["iat"]
    if not isinstance(iat, (int, float)) or isinstance(iat, bool) or not math.isfinite(iat):
        raise WebhookRejected("Plaid-Verification's iat is not a time")
    return claims


def _check_age(ctx, claims: dict[str, Any]) -> None:
    """The signed delivery's ``iat`` within the tolerance (a little skew allowed)."""
    age = time.time() - claims["iat"]
    if age < -IAT_LEEWAY_SECONDS:
        raise WebhookRejected(f"Plaid-Verification was signed {-age:.0f} s in the future (iat ahead of the hub's "
                              f"clock by more than {IAT_LEEWAY_SECONDS} s): check the hub's clock")
    if age > ctx.provider.webhook_tolerance_seconds:
        raise WebhookRejected("the delivery is too old", code="webhook_stale")


async def _verification_key(ctx, kid: str) -> jwt.PyJWK:
    where = (_environment(ctx), kid)
    cached = _verification_keys.get(where)
    if cached is None or time.time() - cached[0] > KEY_CACHE_SECONDS:
        now = time.time()
        for stale in [k for k, at in _refused_kids.items() if now - at >= KEY_CACHE_SECONDS]:
            del _refused_kids[stale]
        if where in _refused_kids:
            raise WebhookRejected("unknown verification key (Plaid refused it)")
        lookups = _key_lookups.setdefault(ctx.connection_id, [])
        lookups[:] = [t for t in lookups if now - t < 60]
        if cached is None and len(lookups) >= KEY_LOOKUPS_PER_MINUTE:
            raise WebhookRejected("too many deliveries signed with unknown keys; not looked up")
        lookups.append(now)
        try:
            key = (await _post(ctx, "/webhook_verification_key/get", key_id=kid))["key"]
        except (ValidationFailed, NotFound) as exc:
            _refused_kids[where] = now
            raise WebhookRejected(f"unknown verification key: {exc.message}") from None
        except ProviderUnavailable:
            if cached is None:
                raise
            key = cached[1]  # Plaid unreachable for a moment: the key it served stands until it answers
        cached = _verification_keys[where] = (time.time(), key)
    key = cached[1]
    if key.get("expired_at") is not None and key["expired_at"] <= time.time():
        raise WebhookRejected("the delivery is signed with an expired Plaid key")
    try:
        return jwt.PyJWK(key)
    except jwt.PyJWTError:
        raise WebhookRejected("Plaid served an unusable verification key") from None

