"""Xero through its Accounting API (``api.xro/2.0``): OAuth 2 (PKCE, access
tokens of 30 minutes, refresh tokens of 60 days rotating on each use), one hub
connection per Xero organisation (tenant: the ``xero-tenant-id`` of every
call), contacts, invoices, accounts, items and payments as Xero shapes them
(its ``/Date(...)/`` times read as ISO 8601), ``If-Modified-Since`` listing,
``Idempotency-Key`` writes, Xero's per-tenant and per-app limits, and webhooks
signed with the app's webhook key (its intent-to-receive check included).
The fake Xero is :mod:`hub_xero.testing`."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

from hub import hookimpl, oauth2
from hub.http import parse_retry_after
from hub.types import (
    AuthFailed,
    EntityField,
    EntitySchema,
    ErrorDescription,
    NotFound,
    Page,
    ReadOnly,
    ProviderError,
    ProviderInfo,
    RateLimit,
    RateLimited,
    RequestAuth,
    ValidationFailed,
    WebhookEvent,
    WebhookRejected,
)

#: Xero's published limits: per tenant 60 calls a minute and 5,000 a day, 5 at once; per app 10,000 a minute.
MINUTE, DAY, APP_MINUTE, CONCURRENT = (60, 60.0), (5_000, 86_400.0), (10_000, 60.0), 5
#: How long a refresh token lasts unused (each refresh hands out a new one, for as long again).
REFRESH_LIFETIME = timedelta(days=60)
SCOPES = ("openid", "profile", "email", "offline_access", "accounting.transactions", "accounting.contacts",
          "accounting.settings")
#: Xero's names of its limits in a 429's X-Rate-Limit-Problem: the declared limits' names.
LIMIT_NAMES = ("minute", "day", "appminute")


def info(minute: tuple[int, float] = MINUTE, day: tuple[int, float] = DAY,
         app_minute: tuple[int, float] = APP_MINUTE, concurrent: int = CONCURRENT) -> ProviderInfo:
    """The provider's declaration; tests scale the windows down in time."""
    return ProviderInfo(
        name="xero",
        label="Xero",
        category="accounting",
        auth_type="oauth2",
        description="Xero accounting (Accounting API 2.0): contacts, invoices, accounts, items and payments of "
                    "one Xero organisation per connection.",
        logo="https://www.xero.com/favicon.ico",
        urls={
            "api": "https://api.xero.com/api.xro/2.0",
            "connections": "https://api.xero.com/connections",
            "authorize": "https://login.xero.com/identity/connect/authorize",
            "token": "https://identity.xero.com/connect/token",
            "revoke": "https://identity.xero.com/connect/revocation",
        },
        rate_limits=(
            RateLimit.per(*minute, name="minute", remaining_header="X-MinLimit-Remaining"),
            RateLimit.per(*day, name="day", remaining_header="X-DayLimit-Remaining"),
            RateLimit.per(*app_minute, scope="app", name="appminute", remaining_header="X-AppMinLimit-Remaining"),
        ),
        max_concurrent_requests=concurrent,
        # Xero's limits count the API calls made against a tenant (xero-tenant-id): listing a
        # grant's tenants, and its identity server's token and revocation calls, are none.
        unmetered_urls=("connections", "token", "revoke"),
        scopes=SCOPES,
        supports_pkce=True,
        supports_webhooks=True,
        empty_webhook_answers=True,  # "There is no body in the response": its intent-to-receive check fails else
        idempotent_creates=True,  # Idempotency-Key on PUT and POST
        config_fields=(
            EntityField("tenant_id", "Organisation (tenant) ID", description=(
                "The Xero organisation this connection reaches (its xero-tenant-id). Set by the authorization: "
                "name it when starting the flow (GET /oauth/xero/authorize?tenant_id=...) where the user's grant "
                "covers several organisations; it cannot be changed afterwards (connect again).")),
        ),
    )


INFO = info()

# ---------------------------------------------------------------- schema

F = EntityField
UPDATED = F("UpdatedDateUTC", "Last updated", "datetime", readonly=True,
            description="Xero's /Date(ms+0000)/ read as ISO 8601 (UTC)")
ADDRESS = F("Addresses", "Addresses", "array", fields=(
    F("AddressType"), F("AddressLine1"), F("AddressLine2"), F("AddressLine3"), F("AddressLine4"), F("City"),
    F("Region"), F("PostalCode"), F("Country"), F("AttentionTo")))
PHONES = F("Phones", "Phones", "array", fields=(F("PhoneType"), F("PhoneNumber"), F("PhoneAreaCode"),
                                                 F("PhoneCountryCode")))
# A line's LineItemID is sent back with it (not read-only, which a push leaves out): Xero keeps a
# line whose id an update names, and deletes and makes anew the lines it gets without one.
LINES = F("LineItems", "Lines", "array", fields=(
    F("LineItemID"), F("Description"), F("Quantity", type="number"), F("UnitAmount", type="number"),
    F("ItemCode"), F("AccountCode"), F("TaxType"), F("TaxAmount", type="number"), F("LineAmount", type="number")))
DETAILS = (F("UnitPrice", type="number"), F("AccountCode"), F("TaxType"))

FIELDS = {
    "contacts": (
        F("ContactID", "ID", readonly=True), F("ContactNumber", "Number"), F("AccountNumber", "Account number"),
        F("ContactStatus", "Status", description="ACTIVE or ARCHIVED (deleting a contact archives it)"),
        F("Name", required=True, description="unique among the organisation's active contacts"),
        F("FirstName", "First name"), F("LastName", "Last name"), F("EmailAddress", "Email"),
        F("CompanyNumber", "Company number"), F("TaxNumber", "Tax number"), F("DefaultCurrency", "Currency"),
        ADDRESS, PHONES, F("IsSupplier", type="boolean", readonly=True),
        F("IsCustomer", type="boolean", readonly=True), F("HasAttachments", type="boolean", readonly=True), UPDATED,
    ),
    "invoices": (
        F("InvoiceID", "ID", readonly=True), F("Type", required=True, description="ACCREC (sales) or ACCPAY (bill)"),
        F("InvoiceNumber", "Number"), F("Reference"),
        F("Contact", type="object", required=True, fields=(F("ContactID"), F("Name"))),
        F("Date", type="date"), F("DueDate", "Due", type="date"),
        F("Status", description="DRAFT, SUBMITTED, AUTHORISED, PAID; DELETED or VOIDED once deleted"),
        F("LineAmountTypes", description="Exclusive, Inclusive or NoTax"), LINES,
        F("SubTotal", type="number", readonly=True), F("TotalTax", type="number", readonly=True),
        F("Total", type="number", readonly=True), F("AmountDue", type="number", readonly=True),
        F("AmountPaid", type="number", readonly=True), F("AmountCredited", type="number", readonly=True),
        F("CurrencyCode", "Currency"), UPDATED,
    ),
    "accounts": (
        F("AccountID", "ID", readonly=True), F("Code"), F("Name"), F("Type"), F("Status"), F("Description"),
        F("TaxType"), F("Class", readonly=True), F("EnablePaymentsToAccount", type="boolean"),
        F("ShowInExpenseClaims", type="boolean"), F("BankAccountNumber"), F("ReportingCode"), UPDATED,
    ),
    "items": (
        F("ItemID", "ID", readonly=True), F("Code", required=True, description="unique among the items"),
        F("Name"), F("Description"), F("PurchaseDescription", "Purchase description"),
        F("IsSold", type="boolean"), F("IsPurchased", type="boolean"),
        F("SalesDetails", type="object", fields=DETAILS), F("PurchaseDetails", type="object", fields=DETAILS),
        F("IsTrackedAsInventory", type="boolean", readonly=True), UPDATED,
    ),
    "payments": (
        F("PaymentID", "ID", readonly=True),
        F("Invoice", type="object", required=True, fields=(F("InvoiceID"), F("InvoiceNumber"))),
        F("Account", type="object", required=True, fields=(F("AccountID"), F("Code"))),
        F("Date", type="date"), F("Amount", type="number", required=True), F("Reference"),
        F("CurrencyRate", "Currency rate", type="number"),
        F("Status", readonly=True, description="AUTHORISED, or DELETED once deleted"),
        F("PaymentType", "Type", readonly=True), UPDATED,
    ),
}


@dataclasses.dataclass(frozen=True)
class Collection:
    """One Xero collection: its path (and wrapper key), id field, whether Xero
    pages it, and how a record is deleted (``http``: DELETE; ``archive``,
    ``status``, ``payment``: a change of status, the record kept)."""

    name: str
    id_field: str
    paged: bool
    create: bool = True
    update: bool = True
    delete: str | None = None
    description: str = ""
    query: tuple[tuple[str, str], ...] = ()
    full_pass_hours: float | None = None


COLLECTIONS = {
    # Xero: "changes to the Balances, IsCustomer or IsSupplier values will not trigger a contact to be
    # returned with the Modified-After filter" (its UpdatedDateUTC stays): a full pass a day brings them.
    "contacts": Collection("Contacts", "ContactID", True, delete="archive", query=(("includeArchived", "true"),),
                           full_pass_hours=24,
                           description="Deleting a contact archives it (ContactStatus ARCHIVED): Xero keeps it, "
                                       "and the hub lists archived contacts too. IsCustomer, IsSupplier and "
                                       "Balances change without a new UpdatedDateUTC: sync lists contacts whole "
                                       "once a day for them."),
    "invoices": Collection("Invoices", "InvoiceID", True, delete="status", description=(
        "Xero deletes no invoice: deleting a DRAFT or SUBMITTED one sets its Status to DELETED, an AUTHORISED "
        "one is VOIDED; the record is kept, with that status.")),
    "accounts": Collection("Accounts", "AccountID", False, create=False, update=False,
                           description="The chart of accounts, read only; Xero answers it whole (no pages)."),
    "items": Collection("Items", "ItemID", False, delete="http",
                        description="Xero answers the items whole (no pages)."),
    "payments": Collection("Payments", "PaymentID", True, update=False, delete="payment", description=(
        "A payment is not changed, only deleted: its Status becomes DELETED (Xero keeps it) and the invoice is "
        "due again.")),
}
#: Xero's largest page (``pageSize``), and its page when none is asked.
MAX_PAGE, DEFAULT_PAGE = 1000, 100
#: A collection Xero answers whole: the most records one answer may hold (the records API slices it).
UNPAGED = 100_000
SCHEMAS = [
    EntitySchema(entity, c.name, FIELDS[entity], description=c.description, id_field=c.id_field,
                 updated_field="UpdatedDateUTC", supports_create=c.create, supports_update=c.update,
                 supports_delete=c.delete is not None, supports_since=True,
                 fixed_page_size=None if c.paged else UNPAGED, full_pass_hours=c.full_pass_hours)
    for entity, c in COLLECTIONS.items()
]
#: Keys Xero adds to a written record's answer that a read does not carry.
WRITE_ONLY_KEYS = ("StatusAttributeString", "ValidationErrors", "Warnings", "HasValidationErrors")
#: Xero's date fields: a day, whatever time its /Date(...)/ says.
DAY_FIELDS = frozenset({"Date", "DueDate", "ExpectedPaymentDate", "PlannedPaymentDate", "FullyPaidOnDate"})


@hookimpl
def provider_info():
    return INFO


@hookimpl
def entity_schemas():
    return SCHEMAS


# ---------------------------------------------------------------- auth

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@hookimpl
def authorization_url(ctx, redirect_uri, state, code_challenge, params):
    tenant = params.get("tenant_id")
    if tenant is not None:
        if not GUID.fullmatch(tenant.strip()):
            raise ValidationFailed("tenant_id must be a Xero tenant id (a GUID, as GET /connections names it)",
                                   code="invalid_tenant_id", fields=["tenant_id"])
        params["tenant_id"] = tenant.strip().lower()
    query = {"response_type": "code", "client_id": ctx.setting("client_id"), "redirect_uri": redirect_uri,
             "scope": " ".join(ctx.provider.scopes), "state": state}
    if code_challenge:
        query |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    return f"{ctx.url('authorize')}?{urlencode(query, quote_via=quote)}"


def _with_lifetime(credentials):
    """Xero's token answer does not say when its refresh token lapses: 60 days unused."""
    return dataclasses.replace(credentials, refresh_expires_at=datetime.now(timezone.utc) + REFRESH_LIFETIME)


async def _tenants(ctx, token: str | None = None) -> list[dict[str, Any]]:
    """The organisations the grant covers (``GET /connections``), each
    ``{id, tenantId, tenantType, tenantName, ...}``; ``id`` is the connection's
    own (what ``DELETE /connections/{id}`` removes)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    answer = await ctx.http.json("GET", ctx.url("connections"), headers=headers, authenticate=token is None)
    if not isinstance(answer, list) or not all(isinstance(c, dict) and isinstance(c.get("tenantId"), str)
                                               for c in answer):
        raise ProviderError("Xero answered GET /connections without a list of tenants")
    return [c for c in answer if c.get("tenantType", "ORGANISATION") == "ORGANISATION"]


@hookimpl
async def exchange_code(ctx, code, redirect_uri, code_verifier):
    """The tokens, and the one organisation the connection is for: the one
    the flow was started with (``tenant_id``), else the grant's only one.

    A grant of several organisations without a choice is refused with the
    list (``tenant_required``): start again naming one. Its tokens are not
    handed back to be revoked: revoking a Xero grant removes every
    organisation's connection to the app, those the user is about to choose
    from (and any another hub connection of the same user holds); unused,
    the access token lapses in 30 minutes."""
    credentials = _with_lifetime(await oauth2.token_request(
        ctx, "authorization_code", client_auth="basic", code=code, redirect_uri=redirect_uri,
        code_verifier=code_verifier))
    tenants = await _tenants(ctx, credentials.secrets["access_token"])
    listed = [{"tenant_id": t["tenantId"], "name": t.get("tenantName")} for t in tenants]
    chosen = (ctx.config.get("tenant_id") or "").lower()
    if chosen:
        tenant = next((t for t in tenants if t["tenantId"].lower() == chosen), None)
        if tenant is None:
            raise ValidationFailed(f"the user did not authorize the organisation {chosen} for this app; the grant "
                                   f"covers {_names(listed)}", code="tenant_not_granted",
                                   details={"tenants": listed}, fields=["tenant_id"])
    elif len(tenants) == 1:
        tenant = tenants[0]
    elif not tenants:
        raise AuthFailed("the user authorized no Xero organisation for this app", code="no_tenant")
    else:
        raise ValidationFailed(f"the authorization covers {len(tenants)} Xero organisations: start again naming "
                               f"one as tenant_id ({_names(listed)})", code="tenant_required",
                               details={"tenants": listed}, fields=["tenant_id"])
    return dataclasses.replace(credentials, config={"tenant_id": tenant["tenantId"]}, webhook_key=tenant["tenantId"])


def _names(listed: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['tenant_id']} ({t['name']})" for t in listed)


@hookimpl
async def refresh_credentials(ctx):
    refresh_token = ctx.credentials.get("refresh_token")
    if not refresh_token:
        raise AuthFailed("the connection holds no refresh token: connect it again")
    # A new refresh token each time (the old one stops working): the core stores it.
    return _with_lifetime(await oauth2.token_request(ctx, "refresh_token", client_auth="basic",
                                                     refresh_token=refresh_token))


@hookimpl
def request_auth(ctx):
    headers = {"Accept": "application/json"}
    if token := ctx.credentials.get("access_token"):
        headers["Authorization"] = f"Bearer {token}"
    if tenant := ctx.config.get("tenant_id"):
        headers["xero-tenant-id"] = tenant
    return RequestAuth(headers=headers)


@hookimpl
async def test_connection(ctx):
    tenant = ctx.config.get("tenant_id")
    if not tenant:
        raise AuthFailed("the connection names no Xero organisation (tenant_id): connect it again")
    [organisation] = _records(await ctx.http.json("GET", ctx.url(path="/Organisation")), "Organisations")[:1] or [{}]
    # The tenant id, which Xero answered the organisation for (its OrganisationID is another id).
    return {"account": tenant, "name": organisation.get("Name"), "organisation_id": organisation.get(
        "OrganisationID"), "country": organisation.get("CountryCode"), "currency": organisation.get("BaseCurrency")}


@hookimpl
async def disconnect(ctx):
    """Remove this organisation's connection to the app (``DELETE
    /connections/{id}``), not the whole grant: revoking the refresh token
    removes every organisation's connection the user made. Revoked only once
    no organisation is left on it. Nothing, while another hub connection
    holds the same organisation (it may be the same user's grant)."""
    tenant = ctx.config.get("tenant_id")
    if ctx.extra.get("account_shared") or not tenant or not ctx.credentials.get("access_token"):
        return False
    tenants = await _tenants(ctx)
    for connection in [t for t in tenants if t["tenantId"].lower() == tenant.lower()]:
        await ctx.http.request("DELETE", ctx.url("connections", path=f"/{quote(str(connection.get('id')), safe='')}"))
    if any(t["tenantId"].lower() != tenant.lower() for t in tenants):
        return True
    refresh_token = ctx.credentials.get("refresh_token")
    if refresh_token:
        pair = f"{quote(ctx.setting('client_id'), safe='')}:{quote(ctx.setting('client_secret'), safe='')}"
        await ctx.http.request("POST", ctx.url("revoke"), data={"token": refresh_token}, authenticate=False,
                               headers={"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()})
    return True


# ---------------------------------------------------------------- errors


@hookimpl
def describe_error(response):
    """Xero's ValidationException (its elements' messages), its other
    exceptions (``Type``/``Message``), the identity endpoints' OAuth errors,
    the gateway's problem bodies (``Title``/``Detail``), and which limit a
    429 met (``X-Rate-Limit-Problem``)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 429:
        problem = (response.headers.get("X-Rate-Limit-Problem") or "").strip().lower()
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        message = f"Xero's {problem or 'rate'} limit was reached"
        return RateLimited(message, retry_after=retry_after, limit=problem if problem in LIMIT_NAMES else None)
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("error"), str):  # identity.xero.com: {"error": "invalid_grant"}
        return body.get("error_description") or body["error"]
    kind, message = body.get("Type"), body.get("Message")
    if isinstance(message, str):
        messages = _validation_messages(body)
        details = {"ErrorNumber": body.get("ErrorNumber"), "Type": kind, "Message": message}
        if messages:
            details["ValidationErrors"] = messages
        code = _snake(kind) if isinstance(kind, str) and kind else None
        return ErrorDescription("; ".join(messages) or message, details=details, code=code)
    detail, title = body.get("Detail"), body.get("Title")
    if response.status_code == 403 and detail in ("AuthorizationUnsuccessful", "AuthenticationUnsuccessful"):
        # The organisation was disconnected from the app in Xero (or the user lost access to it):
        # the connection needs authorizing again, not a wait.
        return AuthFailed("Xero no longer lets the app reach this organisation (it was disconnected in Xero, "
                          "or the user who connected it lost access): connect it again", code="tenant_disconnected")
    if isinstance(detail, str) or isinstance(title, str):
        return " ".join(str(x) for x in (title, detail) if isinstance(x, str))
    return None


def _validation_messages(body: dict[str, Any]) -> list[str]:
    elements = body.get("Elements")
    messages: list[str] = []
    for element in elements if isinstance(elements, list) else []:
        errors = element.get("ValidationErrors") if isinstance(element, dict) else None
        for error in errors if isinstance(errors, list) else []:
            if isinstance(error, dict) and isinstance(error.get("Message"), str):
                messages.append(error["Message"])
    return list(dict.fromkeys(messages))


def _snake(name: str) -> str:
    """``ValidationException`` → ``validation_exception``: a stable code."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()[:64]


# ---------------------------------------------------------------- records

DATE = re.compile(r"/Date\((-?\d{1,15})([+-]\d{4})?\)/")


def _time(value: str, key: str) -> str:
    """A ``/Date(ms±hhmm)/`` as ISO 8601: the day of a date field, else the
    moment in UTC with its milliseconds (what the core and mappings read)."""
    match = DATE.fullmatch(value)
    if not match:
        return value
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=int(match[1]))
    if key in DAY_FIELDS:
        return moment.date().isoformat()
    return moment.isoformat(timespec="milliseconds")


def _normalised(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        return _time(value, key) if value.startswith("/Date(") else value
    if isinstance(value, dict):
        return {k: _normalised(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v, key) for v in value]
    return value


def _collection(entity: str) -> Collection:
    try:
        return COLLECTIONS[entity]
    except KeyError:
        raise NotFound(f"Xero has no entity {entity!r} here (entities: {', '.join(COLLECTIONS)})") from None


def _writable(entity: str, allowed: bool | str | None, what: str) -> Collection:
    collection = _collection(entity)
    if not allowed:
        raise ReadOnly(f"Xero's {collection.name} cannot be {what} through the hub")
    return collection


def _records(body: Any, name: str) -> list[dict[str, Any]]:
    records = body.get(name) if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ProviderError(f"Xero answered without its {name} list")
    return [{k: v for k, v in _normalised(r).items() if k not in WRITE_ONLY_KEYS} for r in records]


def _key(record: dict[str, Any], id_field: str) -> tuple[str, str]:
    """A record's place in the listing: its modification (ISO, to the
    millisecond, in UTC: such texts order as the times do) and its id."""
    return str(record.get("UpdatedDateUTC") or ""), str(record.get(id_field) or "")


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _header_time(moment: datetime) -> str:
    """``If-Modified-Since`` as Xero takes it: UTC to the second, no zone;
    a second early, so that a record of that very second is not left out."""
    return (moment.astimezone(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    """One page, ordered by ``UpdatedDateUTC`` (then id).

    Xero pages by number, which a change moves records across (a record
    changed goes to the end: those after it move back one, and one would be
    missed). So a page is asked from a time (``If-Modified-Since``, the
    second before the last record listed), and what that brings again is
    left out: records before that time, and those of its very millisecond
    already listed (the cursor holds their ids: how Xero orders records of
    one millisecond is not relied on). Where a page's records mostly share
    their last seconds (a bulk import), the next is asked from there larger,
    to get past them (up to Xero's 1,000, and only then by page number),
    and handed out no larger than asked. With ``since``, records changed
    before it are left out too (Xero's header takes whole seconds)."""
    collection = _collection(entity)
    state = _cursor(cursor) if cursor else {"s": _header_time(since) if since else None, "p": 1, "k": None,
                                            "f": since.astimezone(timezone.utc).isoformat() if since else None}
    headers = {"If-Modified-Since": state["s"]} if state["s"] else {}
    params = {"order": f"UpdatedDateUTC ASC, {collection.id_field} ASC", **dict(collection.query)}
    size = max(1, min(page_size, MAX_PAGE))
    asked = state.get("z") or size
    if collection.paged:
        params |= {"page": str(state["p"]), "pageSize": str(asked)}
    body = await ctx.http.json("GET", ctx.url(path=f"/{collection.name}"), params=params, headers=headers)
    answered = _records(body, collection.name)
    seen_at, seen_ids = (state["k"][0], set(state["k"][1])) if state["k"] else ("", set())
    floor = _moment(state["f"]) if state.get("f") else None

    def new(record: dict[str, Any]) -> bool:
        at, record_id = _key(record, collection.id_field)
        return (at > seen_at or (at == seen_at and record_id not in seen_ids)) and (
            floor is None or _moment(at) >= floor)

    records = [r for r in answered if new(r)]
    numbered = bool(state.get("n"))  # (by page number: every record of the page, or positions are lost)
    cut = collection.paged and not numbered and len(records) > size  # (an unpaged answer is handed out whole)
    passed = answered  # (the records of the answer the listing is past: handed out, or left out)
    if cut:
        records = records[:size]
        passed = answered[:next(i for i, r in enumerate(answered) if r is records[-1]) + 1]
    if not collection.paged or (not cut and _last_page(body, answered, state["p"], asked)):
        return Page(records=records)
    if not answered or not all(_key(r, collection.id_field)[0] for r in passed):
        raise ProviderError(f"Xero answered {collection.name} without their UpdatedDateUTC: the listing cannot go on")
    last_at = max(seen_at, _key(passed[-1], collection.id_field)[0])
    at_last = {_key(r, collection.id_field)[1] for r in passed if _key(r, collection.id_field)[0] == last_at}
    seen = [last_at, sorted(at_last | (seen_ids if last_at == seen_at else set()))]
    if numbered:
        following = {**state, "p": state["p"] + 1, "k": seen}
        return Page(records=records, next_cursor=json.dumps(following, separators=(",", ":")))
    anchor = _header_time(_moment(last_at))
    # What the page asked from the anchor brings again: the records of its seconds listed so far.
    again = sum(1 for r in answered if _moment(_key(r, collection.id_field)[0]) >= _moment(anchor + "+00:00"))
    larger = size if again <= size // 2 else again + size
    if anchor == state["s"]:
        larger = max(larger, asked + size)  # (from the same time as this page: a larger one, to get on)
    if larger <= MAX_PAGE:
        following = {"s": anchor, "p": 1, "k": seen, "f": state.get("f"), "z": larger if larger != size else None}
    else:
        # More than Xero's largest page in the same seconds: by page number, as asked now.
        following = {**state, "p": state["p"] + 1, "k": seen, "n": True, "z": asked}
        if cut:  # (records of this page left out are found again, from its start)
            following = {**state, "k": seen, "n": True, "z": asked}
    return Page(records=records, next_cursor=json.dumps(following, separators=(",", ":")))


def _last_page(body: dict[str, Any], answered: list[dict[str, Any]], page: int, size: int) -> bool:
    """Xero's ``pagination`` says how many pages there are; an answer without
    it (older ones) is the last when shorter than the page asked (Xero's 100
    where it takes no pageSize).

    :raises ProviderError: an empty page said to be followed."""
    pagination = body.get("pagination")
    count = pagination.get("pageCount") if isinstance(pagination, dict) else None
    if isinstance(count, int) and not isinstance(count, bool):
        if page < count and not answered:
            # (None here would end a full pass early: sync would take what follows for deleted.)
            raise ProviderError(f"Xero answered page {page} of {count} empty")
        return page >= count
    return len(answered) < min(size, DEFAULT_PAGE)


def _cursor(cursor: str) -> dict[str, Any]:
    try:
        state = json.loads(cursor)
        if not (isinstance(state, dict) and isinstance(state.get("p"), int) and state["p"] >= 1
                and (state.get("s") is None or isinstance(state["s"], str))
                and (state.get("k") is None or (isinstance(state["k"], list) and len(state["k"]) == 2
                                                and isinstance(state["k"][0], str) and isinstance(state["k"][1], list)
                                                and all(isinstance(i, str) for i in state["k"][1])))
                and (state.get("z") is None or (isinstance(state["z"], int) and 1 <= state["z"] <= MAX_PAGE))):
            raise ValueError
        if state.get("s"):
            datetime.strptime(state["s"], "%Y-%m-%dT%H:%M:%S")
        if state.get("f") is not None:
            _moment(state["f"])
    except (ValueError, TypeError, RecursionError):
        raise ValidationFailed("not a Xero cursor this plugin handed out", code="invalid_cursor") from None
    return state


def _record_url(ctx, entity: str, record_id: str) -> str:
    collection = _collection(entity)
    if not GUID.fullmatch(record_id or ""):
        raise NotFound(f"no {entity} record {record_id!r}: Xero ids are GUIDs")
    return ctx.url(path=f"/{collection.name}/{quote(record_id, safe='')}")


def _one(body: Any, entity: str) -> dict[str, Any]:
    records = _records(body, _collection(entity).name)
    if not records:
        raise ProviderError(f"Xero answered a {entity} write or read without the record")
    return records[0]


@hookimpl
async def get_record(ctx, entity, record_id):
    return _one(await ctx.http.json("GET", _record_url(ctx, entity, record_id)), entity)


def _body(entity: str, data: dict[str, Any]) -> dict[str, Any]:
    return {_collection(entity).name: [data]}


@hookimpl
async def create_record(ctx, entity, data, idempotency_key):
    collection = _writable(entity, _collection(entity).create, "created")
    answer = await ctx.http.json("PUT", ctx.url(path=f"/{collection.name}"), json=_body(entity, data),
                                 headers={"Idempotency-Key": idempotency_key})
    return _one(answer, entity)


async def _post(ctx, entity: str, record_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """``POST /{Collection}/{id}``: a change, with a key of its own (the
    core's retries send it again as it is; another change gets another)."""
    collection = _collection(entity)
    change = {**data, collection.id_field: record_id}
    answer = await ctx.http.json("POST", _record_url(ctx, entity, record_id), json=_body(entity, change),
                                 headers={"Idempotency-Key": str(uuid.uuid4())})
    return _one(answer, entity)


@hookimpl
async def update_record(ctx, entity, record_id, data):
    _writable(entity, _collection(entity).update, "changed")
    return await _post(ctx, entity, record_id, data)


#: An invoice's status, and the status deleting it gives (Xero keeps both).
DELETING = {"DRAFT": "DELETED", "SUBMITTED": "DELETED", "AUTHORISED": "VOIDED"}
DELETED = frozenset({"DELETED", "VOIDED"})


@hookimpl
async def delete_record(ctx, entity, record_id):
    collection = _writable(entity, _collection(entity).delete, "deleted")
    if collection.delete == "http":
        await ctx.http.request("DELETE", _record_url(ctx, entity, record_id))
        return True
    if collection.delete == "archive":
        return await _post(ctx, entity, record_id, {"ContactStatus": "ARCHIVED"})
    if collection.delete == "payment":
        return await _post(ctx, entity, record_id, {"Status": "DELETED"})
    invoice = await get_record(ctx, entity, record_id)
    status = str(invoice.get("Status") or "")
    if status in DELETED:
        return invoice
    # (A PAID invoice is voided only once its payments are deleted: Xero says so, as a validation error.)
    return await _post(ctx, entity, record_id, {"Status": DELETING.get(status, "VOIDED")})


# ---------------------------------------------------------------- webhooks

#: eventCategory → the hub's entity; eventType → its action.
CATEGORIES = {"CONTACT": "contacts", "INVOICE": "invoices"}
EVENT_TYPES = {"CREATE": "created", "UPDATE": "updated"}


def _signed(ctx, request) -> bool:
    """``x-xero-signature`` is the base64 HMAC-SHA256 of the raw body keyed
    with the app's webhook key (no time is signed)."""
    key = ctx.setting("webhook_key")
    expected = base64.b64encode(hmac.new(key.encode(), request.body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, (request.header("x-xero-signature") or "").encode())


def _events(body: bytes) -> list[Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected("malformed delivery: body") from None
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise WebhookRejected("malformed delivery: no events list")
    return events


@hookimpl
def webhook_connection_key(request):
    """Every tenant a delivery names (one delivery may carry several); none
    for the intent-to-receive check (no events), which ``verify_app_webhook`` answers."""
    try:
        events = _events(request.body)
    except WebhookRejected:
        return None
    tenants = [e["tenantId"] for e in events if isinstance(e, dict) and isinstance(e.get("tenantId"), str)]
    return list(dict.fromkeys(tenants))[:100] or None


@hookimpl
def verify_app_webhook(ctx, request):
    """Xero's intent-to-receive check (signed deliveries with no events: 200
    when the signature is right, 401 when not) and deliveries of tenants no
    connection holds any more: acknowledged when signed with the app's key,
    so that Xero keeps the webhook on."""
    return _signed(ctx, request)


@hookimpl
def verify_webhook(ctx, request):
    if not _signed(ctx, request):
        raise WebhookRejected("x-xero-signature does not match")
    tenant = (ctx.account or ctx.config.get("tenant_id") or "").lower()
    found = []
    for event in _events(request.body):
        if not isinstance(event, dict) or str(event.get("tenantId") or "").lower() != tenant:
            continue
        found.append(_event(tenant, event))
    return found


def _event(tenant: str, event: dict[str, Any]) -> WebhookEvent:
    """A change of one record; Xero sends no event id and no record: the
    key is the tenant, resource, change and time, and the core fetches what
    changed."""
    try:
        resource, kind, when = str(event["resourceId"]), str(event["eventType"]), str(event["eventDateUtc"])
        category = str(event["eventCategory"])
    except KeyError:
        raise WebhookRejected("malformed delivery: an event without its resource, type, category or time") from None
    try:
        occurred = _moment(when)
    except ValueError:
        occurred = None
    entity = CATEGORIES.get(category.upper())
    action = EVENT_TYPES.get(kind.upper(), "changed")
    key = hashlib.sha256(f"{tenant}|{resource}|{kind}|{when}".encode()).hexdigest()
    return WebhookEvent(dedup_key=key, type=f"{category.lower()}.{action}", entity=entity, action=action,
                        record_id=resource if entity else None, occurred_at=occurred, raw=event)
