"""QuickBooks Online through its Accounting API (v3): OAuth 2 per company
(``realmId``), customers, invoices, items, payments, vendors and accounts read
with the query language and written with ``SyncToken`` concurrency, Fault
bodies (also inside HTTP 200) as hub errors, the per-company limits, and
webhooks signed with the app's verifier token in both of Intuit's formats.
Its fake company is :mod:`hub_quickbooks.testing`."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from hub import hookimpl, oauth2
from hub.http import read_json
from hub.types import (
    AuthFailed,
    EntityField,
    EntitySchema,
    ErrorDescription,
    HubError,
    NotFound,
    Page,
    PermissionDenied,
    ProviderError,
    ProviderInfo,
    ProviderUnavailable,
    RateLimit,
    RateLimited,
    RequestAuth,
    StaleVersion,
    ValidationFailed,
    WebhookEvent,
    WebhookRejected,
)

#: Intuit answers every call as of this minor version (75 is the oldest it still serves).
MINOR_VERSION = "75"
#: Most records one query answers.
MAX_RESULTS = 1000
#: Longest ``requestid`` QuickBooks takes.
REQUEST_ID_LENGTH = 50
#: Intuit's advice after a 429, which says no Retry-After: wait a minute.
THROTTLE_WAIT_SECONDS = 60.0

INFO = ProviderInfo(
    name="quickbooks",
    label="QuickBooks Online",
    logo="https://quickbooks.intuit.com/favicon.ico",
    category="accounting",
    auth_type="oauth2",
    description="QuickBooks Online companies: customers, vendors, items, accounts, invoices and payments "
                "(Accounting API v3).",
    urls={
        "api": "https://{api_host}/v3/company/{realm_id}",
        "authorize": "https://appcenter.intuit.com/connect/oauth2",
        "token": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
        "revoke": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
    },
    # Sandbox companies: HUB_QUICKBOOKS_API_HOST=sandbox-quickbooks.api.intuit.com
    url_defaults={"api_host": "quickbooks.api.intuit.com"},
    # Per company: 10 requests a second, 500 a minute, 10 at once.
    rate_limit=RateLimit(requests_per_second=10, burst=10),
    rate_limits=(RateLimit.per(500, 60, name="minute"),),
    max_concurrent_requests=10,
    scopes=("com.intuit.quickbooks.accounting",),
    supports_webhooks=True,
    config_fields=(EntityField("realm_id", "Company ID", readonly=True,
                               description="the company's realmId, which the authorization names"),),
    idempotent_creates=True,  # ?requestid=: the same id answers the first result again
)

F = EntityField


def _ref(name: str, label: str = "") -> EntityField:
    """A reference to another record: ``{"value": <Id>, "name": <its name>}``."""
    return F(name, label, type="object", fields=(F("value"), F("name")))


META = F("MetaData", "Metadata", type="object", readonly=True, fields=(
    F("CreateTime", "Created", type="datetime"), F("LastUpdatedTime", "Last updated", type="datetime")))
COMMON = (
    F("Id", "ID", readonly=True),
    F("SyncToken", "Version", readonly=True, description="QuickBooks' version of the record, sent with each change"),
    F("domain", readonly=True), F("sparse", type="boolean", readonly=True), META,
)
ADDRESS = (F("Id"), F("Line1"), F("Line2"), F("City"), F("CountrySubDivisionCode"), F("PostalCode"), F("Country"))
CURRENCY = _ref("CurrencyRef", "Currency")
PARTY = (
    F("DisplayName", "Display name", description="unique among customers, vendors and employees"),
    F("GivenName", "First name"), F("FamilyName", "Last name"), F("CompanyName", "Company"),
    F("PrintOnCheckName", "Name on checks"),
    F("PrimaryEmailAddr", "Email", type="object", fields=(F("Address"),)),
    F("PrimaryPhone", "Phone", type="object", fields=(F("FreeFormNumber"),)),
    F("BillAddr", "Billing address", type="object", fields=ADDRESS),
    F("Active", type="boolean"), F("Balance", type="number", readonly=True), CURRENCY,
)
LINE = F("Line", "Lines", type="array", fields=(
    F("Id"), F("LineNum", type="integer"), F("Description"), F("Amount", type="number"), F("DetailType"),
    F("SalesItemLineDetail", type="object", fields=(_ref("ItemRef"), F("Qty", type="number"),
                                                    F("UnitPrice", type="number"))),
    F("SubTotalLineDetail", type="object"),
))
PAYMENT_LINE = F("Line", "Applied to", type="array", fields=(
    F("Amount", type="number"), F("LinkedTxn", type="array", fields=(F("TxnId"), F("TxnType"))),
))

FIELDS = {
    "customers": COMMON + PARTY + (F("FullyQualifiedName", readonly=True), F("Notes"),
                                   F("Taxable", type="boolean")),
    "vendors": COMMON + PARTY + (F("AcctNum", "Account number"), F("Vendor1099", "1099 vendor", type="boolean")),
    "items": COMMON + (
        F("Name", required=True), F("FullyQualifiedName", readonly=True), F("Type", description=(
            "Service, NonInventory, Inventory or Category")), F("Sku"), F("Description"),
        F("UnitPrice", type="number"), F("PurchaseCost", type="number"), F("Taxable", type="boolean"),
        F("QtyOnHand", type="number"), _ref("IncomeAccountRef"), _ref("ExpenseAccountRef"), F("Active", type="boolean"),
    ),
    "accounts": COMMON + (
        F("Name", required=True), F("FullyQualifiedName", readonly=True), F("AccountType", "Type", required=True),
        F("AccountSubType", "Detail type"), F("Classification", readonly=True), F("AcctNum", "Number"),
        F("Description"), F("SubAccount", type="boolean", readonly=True), _ref("ParentRef", "Parent"),
        F("CurrentBalance", type="number", readonly=True), F("Active", type="boolean"), CURRENCY,
    ),
    "invoices": COMMON + (
        F("DocNumber", "Number"), F("TxnDate", "Date", type="date"), F("DueDate", "Due", type="date"),
        _ref("CustomerRef", "Customer"), LINE, F("TotalAmt", "Total", type="number", readonly=True),
        F("Balance", type="number", readonly=True), F("PrivateNote", "Private note"),
        F("CustomerMemo", "Message to the customer", type="object", fields=(F("value"),)),
        F("BillEmail", "Billing email", type="object", fields=(F("Address"),)),
        F("EmailStatus", readonly=True), CURRENCY,
    ),
    "payments": COMMON + (
        F("TxnDate", "Date", type="date"), _ref("CustomerRef", "Customer"), F("TotalAmt", "Amount", type="number"),
        F("UnappliedAmt", "Unapplied", type="number", readonly=True), F("PaymentRefNum", "Reference"),
        F("PrivateNote", "Private note"), _ref("DepositToAccountRef", "Deposited to"), PAYMENT_LINE, CURRENCY,
    ),
}
#: The hub's entity names and QuickBooks' (in queries, paths and bodies).
ENTITIES = {"customers": "Customer", "vendors": "Vendor", "items": "Item", "accounts": "Account",
            "invoices": "Invoice", "payments": "Payment"}
#: QuickBooks' name lists: their records are never deleted, only made inactive (Active: false).
NAME_LISTS = frozenset({"customers", "vendors", "items", "accounts"})
DELETING = ("Deleting one makes it inactive (Active: false): QuickBooks keeps name-list records, and the "
            "hub lists inactive ones too.")
SCHEMAS = [
    EntitySchema(entity, entity.capitalize(), FIELDS[entity], id_field="Id",
                 updated_field="MetaData.LastUpdatedTime", supports_create=True, supports_update=True,
                 supports_delete=True, supports_since=True, description=DELETING if entity in NAME_LISTS else "")
    for entity in ENTITIES
]
BY_NAME = {name.lower(): entity for entity, name in ENTITIES.items()}


# ---------------------------------------------------------------- schema


@hookimpl
def provider_info():
    return INFO


@hookimpl
def entity_schemas():
    return SCHEMAS


# ---------------------------------------------------------------- auth


@hookimpl
def authorization_url(ctx, redirect_uri, state):
    query = {"client_id": ctx.setting("client_id"), "response_type": "code", "scope": " ".join(INFO.scopes),
             "redirect_uri": redirect_uri, "state": state}
    return f"{ctx.url('authorize')}?{urlencode(query)}"


@hookimpl
async def exchange_code(ctx, code, redirect_uri, params):
    """The callback names the company the user chose (``realmId``): it is the
    connection's config, which every API URL holds, and its webhook key."""
    realm = params.get("realmId") or ""
    if not (realm.isascii() and realm.isdigit() and len(realm) <= 32):
        raise AuthFailed("the callback names no QuickBooks company (realmId)", code="missing_realm")
    credentials = await oauth2.token_request(ctx, "authorization_code", client_auth="basic", code=code,
                                             redirect_uri=redirect_uri)
    return dataclasses.replace(credentials, config={"realm_id": realm}, webhook_key=realm)


@hookimpl
async def refresh_credentials(ctx):
    # Intuit answers a refresh token (rotated now and then) and its ~101 days
    # (x_refresh_token_expires_in): the core stores both.
    return await oauth2.token_request(ctx, "refresh_token", client_auth="basic",
                                      refresh_token=ctx.credentials["refresh_token"])


@hookimpl
def request_auth(ctx):
    token = ctx.credentials.get("access_token")
    return RequestAuth(headers={"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})


@hookimpl
async def test_connection(ctx):
    realm = ctx.config.get("realm_id") or ""
    info = _unwrap(await _call(ctx, "GET", f"/companyinfo/{quote(realm, safe='')}"), "CompanyInfo")
    return {"account": realm, "name": info.get("CompanyName"), "country": info.get("Country")}


@hookimpl
async def disconnect(ctx):
    """Revoke the grant, unless another connection holds the same company."""
    token = ctx.credentials.get("refresh_token") or ctx.credentials.get("access_token")
    if ctx.extra.get("account_shared") or not token:
        return False
    pair = f"{ctx.setting('client_id')}:{ctx.setting('client_secret')}".encode()
    await ctx.http.request("POST", ctx.url("revoke"), json={"token": token}, authenticate=False,
                           headers={"Authorization": "Basic " + base64.b64encode(pair).decode(),
                                    "Accept": "application/json"})
    return True


# ---------------------------------------------------------------- errors


def _fault(body: Any) -> tuple[str, list[dict[str, Any]]] | None:
    """The type and errors of a Fault body: QuickBooks' (``Fault.Error``) or
    its gateway's (``fault.error``, lower-case keys, on a 401)."""
    fault = (body.get("Fault") or body.get("fault")) if isinstance(body, dict) else None
    errors = (fault.get("Error") or fault.get("error")) if isinstance(fault, dict) else None
    if not isinstance(errors, list) or not errors or not all(isinstance(e, dict) for e in errors):
        return None
    return str(fault.get("type") or ""), errors


def _key(error: dict[str, Any], name: str) -> str:
    value = error.get(name, error.get(name.lower()))
    return "" if value is None else str(value)


#: Fault codes that say more than the status; their numbers as QuickBooks writes them less zeros.
AUTH_CODES = {"100", "120", "3200"}  # authentication failed, not an admin any more, token refused
FORBIDDEN_CODES = {"3100"}  # the app may not reach this company
THROTTLE_CODES = {"3001"}
QUERY_CODES = {"4000", "4001"}
CODES = {"6240": "duplicate_name", "6140": "duplicate_doc_number", "2500": "invalid_reference",
         "2020": "required_param_missing", "2170": "invalid_enumeration", "6210": "account_period_closed"}
FAULT_CLASSES = {"validationfault": ValidationFailed, "authenticationfault": AuthFailed,
                 "authentication": AuthFailed, "authorizationfault": PermissionDenied, "systemfault":
                 ProviderUnavailable, "service": ProviderUnavailable}


def _throttle_wait(ctx) -> float:
    try:
        return float(ctx.settings.get("throttle_wait_seconds") or THROTTLE_WAIT_SECONDS)
    except ValueError:
        return THROTTLE_WAIT_SECONDS


def fault_error(body: Any, status: int, method: str, ctx=None) -> HubError | ErrorDescription | None:
    """What a Fault body says: a hub error where its code tells the class
    (a stale SyncToken, a record deleted, the company closed), else the
    message with the fields (``element``) and the Fault as details, for the
    status to class. A Fault inside HTTP 200 is always an error of its own."""
    read = _fault(body)
    if read is None:
        return None
    kind, errors = read
    message = "; ".join(_key(e, "Detail") or _key(e, "Message") for e in errors) or "QuickBooks answered a Fault"
    code = _key(errors[0], "code").lstrip("0")
    fields = [path for e in errors if (path := _key(e, "element"))]
    details = {"type": kind, "errors": errors}
    kwargs = {"details": details, "fields": fields, "provider_status": status}
    if code == "5010":
        return StaleVersion(message, **kwargs)
    if code == "610" and method == "GET":
        return NotFound(message, **kwargs)
    if code == "610":
        # On a write, Intuit's two variants (Detail "...has been made inactive", "Another user has
        # deleted this transaction") name neither which record: one the write references, or the
        # one it changes. An update or a delete reads its record to tell (see _unless_gone).
        return ValidationFailed(message, code="object_not_found", **kwargs)
    if code == "6190":  # the subscription ended: the account is refused, not the grant
        return AuthFailed(message, code="company_unavailable", account_refused=True, **kwargs)
    if code in THROTTLE_CODES or status == 429:
        return RateLimited(message, retry_after=_throttle_wait(ctx) if ctx else THROTTLE_WAIT_SECONDS, **kwargs)
    if code in AUTH_CODES:
        return AuthFailed(message, **kwargs)
    if code in FORBIDDEN_CODES:
        return PermissionDenied(message, **kwargs)
    if code in QUERY_CODES:
        return ValidationFailed(message, code="invalid_query", **kwargs)
    if status < 400:
        error = FAULT_CLASSES.get(kind.lower(), ProviderError)
        return error(message, code=CODES.get(code), **kwargs)
    return ErrorDescription(message, fields=fields, details=details, code=CODES.get(code))


@hookimpl
def describe_error(response, ctx):
    try:
        body = response.json()
    except ValueError:
        body = None
    described = fault_error(body, response.status_code, response.request.method, ctx)
    if described is None and response.status_code == 429:
        # Intuit's 429 says no Retry-After; its advice is a minute (see README: HUB_QUICKBOOKS_THROTTLE_WAIT_SECONDS).
        return RateLimited("QuickBooks' request limit for the company was reached", retry_after=_throttle_wait(ctx))
    if described is None and isinstance(body, dict) and isinstance(body.get("error"), str):
        return body.get("error_description") or body["error"]  # the token endpoint's OAuth error
    return described


# ---------------------------------------------------------------- records


def _qbo(entity: str) -> str:
    try:
        return ENTITIES[entity]
    except KeyError:
        raise NotFound(f"QuickBooks has no entity {entity!r}", code="unknown_entity") from None


def _id(entity: str, record_id: str) -> str:
    if not (record_id.isascii() and record_id.isdigit()):
        raise NotFound(f"no {entity} record {record_id!r}: QuickBooks ids are numbers")
    return quote(record_id, safe="")


def _unwrap(body: Any, name: str) -> dict[str, Any]:
    record = body.get(name) if isinstance(body, dict) else None
    if not isinstance(record, dict):
        raise ProviderError(f"QuickBooks answered without the {name}")
    return record


async def _call(ctx, method: str, path: str, params: dict[str, str] | None = None, json: Any = None) -> Any:
    """One call of the company's API, with the minor version; a Fault inside
    a 200 is raised as the error it says. A write carries a ``requestid``,
    which makes it safe to send again: QuickBooks answers a repeated one with
    its first result."""
    minor = ctx.settings.get("minor_version") or MINOR_VERSION
    response = await ctx.http.request(method, ctx.url(path=path), params={**(params or {}), "minorversion": minor},
                                      json=json, idempotent=method == "GET" or "requestid" in (params or {}))
    body = read_json(response)
    error = fault_error(body, response.status_code, method, ctx)  # (in a 200: a HubError, or None)
    if isinstance(error, HubError):
        raise error
    return body


def _query_time(since: datetime) -> str:
    """``since`` as QuickBooks compares LastUpdatedTime (to the second, floored: at or after keeps)."""
    return since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


CURSOR = re.compile(r"([0-9]{1,9}):([0-9]{1,32})")


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    """``SELECT * FROM <Entity> ... ORDERBY Id STARTPOSITION n MAXRESULTS m``.

    QuickBooks pages by position (1-based) and says no total: a page shorter
    than asked is the last. The cursor is the position of the last record
    returned and its Id; the next page is asked from that position again, one
    more record, so that its first record must be that one. Found further on,
    records were added before it (a since listing gaining records changed
    meanwhile): the page goes on after it. Not found, records before it were
    deleted and the positions moved back under the cursor: it is refused as
    ``invalid_cursor``, and sync starts its pass over rather than miss records.
    A page of exactly the size asked leads to one more call, which answers
    only that record: an empty last page."""
    name = _qbo(entity)
    size = max(1, min(page_size, MAX_RESULTS - 1))
    start, anchor = 1, None
    if cursor:
        match = CURSOR.fullmatch(cursor)
        if not match:
            raise ValidationFailed("not a QuickBooks cursor this plugin handed out", code="invalid_cursor")
        start, anchor = int(match.group(1)), match.group(2)
    conditions = ["Active IN (true, false)"] if entity in NAME_LISTS else []  # (inactive ones too)
    if since:
        conditions.append(f"MetaData.LastUpdatedTime >= '{_query_time(since)}'")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    asked = size + (anchor is not None)
    query = f"SELECT * FROM {name}{where} ORDERBY Id STARTPOSITION {start} MAXRESULTS {asked}"
    answer = (await _call(ctx, "GET", "/query", params={"query": query})).get("QueryResponse")
    records = answer.get(name, []) if isinstance(answer, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("Id") for r in records):
        raise ProviderError(f"QuickBooks answered the {name} query without its records")
    full = len(records) == asked  # (fewer than asked: the last page)
    position = start - 1 + len(records)  # of the last record answered
    if anchor is not None:
        ids = [str(r["Id"]) for r in records]
        if anchor not in ids:
            raise ValidationFailed(f"the {entity} changed under the cursor (a record before it was deleted): "
                                   f"list again from the first page", code="invalid_cursor")
        records = records[ids.index(anchor) + 1:]
    last = str(records[-1]["Id"]) if records else anchor
    return Page(records=records, next_cursor=f"{position}:{last}" if full else None)


@hookimpl
async def get_record(ctx, entity, record_id):
    name = _qbo(entity)
    return _unwrap(await _call(ctx, "GET", f"/{name.lower()}/{_id(entity, record_id)}"), name)


def request_id(*parts: Any) -> str:
    """A ``requestid`` (at most 50 characters) for a write: the same write, the same id."""
    text = ":".join(json.dumps(p, sort_keys=True, default=str) if not isinstance(p, str) else p for p in parts)
    return text if len(text) <= REQUEST_ID_LENGTH else hashlib.sha256(text.encode()).hexdigest()[:REQUEST_ID_LENGTH]


@hookimpl
async def create_record(ctx, entity, data, idempotency_key):
    name = _qbo(entity)
    body = await _call(ctx, "POST", f"/{name.lower()}", params={"requestid": request_id(idempotency_key)}, json=data)
    return _unwrap(body, name)


def _write_id() -> str:
    """The ``requestid`` of one update or delete: each call its own, the
    core's re-sends of it the same. Not derived from the change: QuickBooks
    answers a repeated id with its first answer, so a change refused once (a
    name in use) and sent again once its cause is gone would meet its refusal
    for ever. A change made whose answer was lost is told by its SyncToken,
    which it moved on: sent again, it is refused as stale, and sync compares."""
    return uuid.uuid4().hex


async def _sync_token(ctx, entity: str, record_id: str, base: dict[str, Any] | None, data: dict[str, Any]) -> str:
    """The version a change is made on: the one sync based it on, else the
    one the client sent (``SyncToken`` in its data), else QuickBooks' current
    one, read first (a change through the records API without a version
    overwrites what changed meanwhile, as the client asked)."""
    token = (base or {}).get("SyncToken", data.get("SyncToken"))
    if token is None:
        token = (await get_record(ctx, entity, record_id)).get("SyncToken")
    return str(token)


@hookimpl
async def update_record(ctx, entity, record_id, data, base):
    name = _qbo(entity)
    _id(entity, record_id)
    change = {**data, "Id": record_id, "SyncToken": await _sync_token(ctx, entity, record_id, base, data),
              "sparse": True}
    try:
        answer = await _call(ctx, "POST", f"/{name.lower()}", json=change, params={"requestid": _write_id()})
    except ValidationFailed as refused:
        raise await _unless_gone(ctx, entity, record_id, refused) from None
    return _unwrap(answer, name)


async def _unless_gone(ctx, entity: str, record_id: str, refused: ValidationFailed) -> HubError:
    """What an update or delete refused with Fault 610 (``object_not_found``)
    is: ``NotFound`` when the record itself cannot be read (deleted, or an
    Id QuickBooks never had: a transaction's answer says "deleted" either
    way, a name list's the same "made inactive" as a reference to an
    inactive record), else the refusal, about a record the change
    references. One read, on this refusal only."""
    if refused.code != "object_not_found":
        return refused
    try:
        await get_record(ctx, entity, record_id)
    except NotFound:
        return NotFound(f"no {entity} record {record_id} in QuickBooks (deleted, or never made): "
                        f"{refused.message}", details=refused.details, provider_status=refused.provider_status)
    except (ProviderUnavailable, RateLimited) as passing:
        # Not known yet which it is: the read's passing error, so the write is tried again later
        # (a 422 would be kept as the push's lasting failure).
        return passing
    except HubError:
        return refused  # (the read refused otherwise: the write's own answer stands)
    return refused


@hookimpl
async def delete_record(ctx, entity, record_id, base):
    """Invoices and payments are deleted (``?operation=delete``). QuickBooks
    deletes no name-list record (customers, vendors, items, accounts): it is
    made inactive, and returned as it now is."""
    if entity in NAME_LISTS:
        return await update_record(ctx, entity, record_id, {"Active": False}, base)
    name = _qbo(entity)
    _id(entity, record_id)
    target = {"Id": record_id, "SyncToken": await _sync_token(ctx, entity, record_id, base, {})}
    try:
        await _call(ctx, "POST", f"/{name.lower()}", json=target,
                    params={"operation": "delete", "requestid": _write_id()})
    except ValidationFailed as refused:
        raise await _unless_gone(ctx, entity, record_id, refused) from None
    return True


# ---------------------------------------------------------------- webhooks

#: What QuickBooks calls a change, in the hub's actions (a merge and a void change the record).
ACTIONS = {"create": "created", "update": "updated", "delete": "deleted", "merge": "updated", "void": "updated",
           "emailed": "updated", "created": "created", "updated": "updated", "deleted": "deleted",
           "merged": "updated", "voided": "updated"}


def _payload(request) -> Any:
    try:
        return json.loads(request.body)
    except (ValueError, RecursionError):
        return None


def _notifications(payload: Any) -> list[dict[str, Any]]:
    """The legacy format's per-company notifications (``eventNotifications``)."""
    found = payload.get("eventNotifications") if isinstance(payload, dict) else None
    return [n for n in found if isinstance(n, dict)] if isinstance(found, list) else []


@hookimpl
def webhook_connection_key(request):
    """The companies a delivery names: one delivery may carry several."""
    payload = _payload(request)
    if isinstance(payload, list):  # CloudEvents
        realms = [e.get("intuitaccountid") for e in payload if isinstance(e, dict)]
    else:
        realms = [n.get("realmId") for n in _notifications(payload)]
    keys = list(dict.fromkeys(str(r) for r in realms if isinstance(r, (str, int)) and str(r)))
    return keys[:100] or None


def _time(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _event(dedup_key: str, name: str, record_id: str, verb: str, when: Any, raw: dict[str, Any]) -> WebhookEvent:
    """A change of one record: the delivery carries no record, so the core
    fetches what changed (it queues an incremental pull of the entity)."""
    action = ACTIONS.get(verb.lower(), "changed")
    return WebhookEvent(dedup_key=dedup_key, type=f"{name.lower()}.{action}", entity=BY_NAME.get(name.lower()),
                        action=action, record_id=record_id, occurred_at=_time(when), raw=raw)


def _signed(ctx, request) -> bool:
    """Whether ``intuit-signature`` is the base64 HMAC-SHA256 of the raw body
    keyed with the app's verifier token (checked in constant time)."""
    token = ctx.setting("webhook_verifier_token")
    expected = base64.b64encode(hmac.new(token.encode(), request.body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, (request.header("intuit-signature") or "").encode())


@hookimpl
def verify_app_webhook(ctx, request):
    """Intuit signs every delivery with the app's verifier token, and keeps
    delivering the changes of a company whose connection was deleted: a
    signed one is acknowledged (nothing is stored), so Intuit stops retrying."""
    return _signed(ctx, request)


@hookimpl
def verify_webhook(ctx, request):
    """``intuit-signature`` is the base64 HMAC-SHA256 of the raw body keyed
    with the app's verifier token (no time is signed: Intuit retries a
    delivery for hours). Either format, the events of the connection's
    company only. The legacy one has no event id: an event's key is its
    company, entity, id, operation and time."""
    if not _signed(ctx, request):
        raise WebhookRejected("intuit-signature does not match")
    realm = str(ctx.config.get("realm_id") or ctx.account or "")
    payload = _payload(request)
    try:
        if isinstance(payload, list):
            events = []
            for e in payload:
                if str(e["intuitaccountid"]) != realm:
                    continue
                name, verb = e["type"].split(".")[1], e["type"].split(".")[2]
                events.append(_event(str(e["id"]), name, str(e["intuitentityid"]), verb, e.get("time"), e))
                data = e.get("data")
                merged_away = data.get("deletedid") if isinstance(data, dict) else None
                if verb.lower() == "merged" and merged_away:  # (as the legacy format's deletedId)
                    events.append(_event(f"{e['id']}:merged", name, str(merged_away), "delete", e.get("time"), e))
            return events
        if not isinstance(payload, dict) or not isinstance(payload.get("eventNotifications"), list):
            raise TypeError
        events = []
        for notification in _notifications(payload):
            if str(notification.get("realmId")) != realm:
                continue
            for change in notification["dataChangeEvent"]["entities"]:
                name, record_id, verb = str(change["name"]), str(change["id"]), str(change["operation"])
                when = change.get("lastUpdated")
                key = hashlib.sha256(f"{realm}|{name}|{record_id}|{verb}|{when}".encode()).hexdigest()
                events.append(_event(key, name, record_id, verb, when, change))
                if verb.lower() == "merge" and change.get("deletedId"):  # merged into this one: the other is gone
                    events.append(_event(f"{key}:merged", name, str(change["deletedId"]), "delete", when, change))
        return events
    except (KeyError, IndexError, TypeError, AttributeError):
        raise WebhookRejected("malformed delivery body") from None
