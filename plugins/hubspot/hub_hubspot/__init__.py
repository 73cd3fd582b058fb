"""HubSpot CRM through its v3 API: OAuth 2 per portal (access tokens of 30
minutes, a lasting refresh token), contacts, companies, deals and tickets as
HubSpot shapes them (``{id, properties, createdAt, updatedAt, archived}``),
``after`` cursors, modified-since listing through the search endpoint, the
portal's and the search endpoint's rate limits, and webhooks signed with the
app's client secret (v3, and v1 while HubSpot migrates), one delivery
batching several portals. Records hold every property the properties API
names for the portal, HubSpot's own and the portal's (custom) ones. The fake HubSpot is
:mod:`hub_hubspot.testing`."""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import hmac
import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub import hookimpl, oauth2
from hub.types import (
    REDACTED,
    AuthFailed,
    ConfigurationError,
    EntityField,
    EntitySchema,
    ErrorDescription,
    NotFound,
    Page,
    PermissionDenied,
    ProviderError,
    ProviderInfo,
    RateLimit,
    RateLimited,
    RequestAuth,
    ValidationFailed,
    WebhookEvent,
    WebhookRejected,
    signed_unix_time,
)

#: HubSpot's limit for apps using OAuth: 110 calls in any 10 seconds per portal.
TEN_SECONDLY = (110, 10.0)
#: The search endpoints' own limit: 5 calls a second per portal.
SEARCH_PER_SECOND = (5, 1.0)
# (The properties API, which names the portal's own properties, takes an object's read scope too:
# no crm.schemas.* scope, which an app set up for these would have to be changed in HubSpot to grant.)
SCOPES = ("oauth", "crm.objects.contacts.read", "crm.objects.contacts.write", "crm.objects.companies.read",
          "crm.objects.companies.write", "crm.objects.deals.read", "crm.objects.deals.write", "tickets")


def info(ten_secondly: tuple[int, float] = TEN_SECONDLY,
         search: tuple[int, float] = SEARCH_PER_SECOND) -> ProviderInfo:
    """The provider's declaration; tests scale the windows down in time."""
    return ProviderInfo(
        name="hubspot",
        label="HubSpot",
        category="crm",
        auth_type="oauth2",
        description="HubSpot CRM: contacts, companies, deals and tickets (CRM v3 API).",
        logo="https://www.hubspot.com/favicon.ico",
        urls={
            "api": "https://api.hubapi.com",
            "authorize": "https://app.hubspot.com/oauth/authorize",
            "token": "https://api.hubapi.com/oauth/v1/token",
        },
        # Answers carry X-HubSpot-RateLimit-Remaining (not the search endpoints'): several hub
        # processes, and other apps of the portal, share the window.
        rate_limit=RateLimit.per(*ten_secondly, remaining_header="X-HubSpot-RateLimit-Remaining"),
        rate_limits=(RateLimit.per(*search, endpoint="/search", name="search"),),
        scopes=SCOPES,
        supports_webhooks=True,
        # A private app's token, typed, connects without the OAuth flow (it does not expire).
        credential_fields=(EntityField("access_token", "Private app access token", required=True,
                                       description="pat-… of a private app in the portal (Settings › Integrations "
                                                   "› Private apps), instead of connecting with OAuth"),
                           EntityField("client_secret", "Private app client secret",
                                       description="the private app's client secret (its Auth tab), which signs "
                                                   "the webhooks the private app sends; without it, they are "
                                                   "refused")),
        config_fields=(
            EntityField("time_zone", "Time zone", readonly=True,
                        description="The portal's time zone (HubSpot's daily limit resets at its midnight); "
                                    "set by the authorization"),
        ),
    )


INFO = info()


# ---------------------------------------------------------------- schema


def _p(name: str, label: str, kind: str = "string", readonly: bool = False, description: str = "") -> EntityField:
    return EntityField(name, label, kind, readonly=readonly, description=description)


_AS_TEXT = "HubSpot answers every property value as text (a number as \"1500\")."
_CREATED = _p("createdate", "Created", "datetime", readonly=True)
_RECORD_ID = _p("hs_object_id", "Record ID", readonly=True)
_OWNER = _p("hubspot_owner_id", "Owner ID")


@dataclasses.dataclass(frozen=True)
class CrmObject:
    """One HubSpot object type: its label, the property holding its last
    modification (what search filters on) and the properties read."""

    label: str
    modified: str
    properties: tuple[EntityField, ...]
    description: str = ""


OBJECTS = {
    "contacts": CrmObject("Contacts", "lastmodifieddate", (
        _p("email", "Email"), _p("firstname", "First name"), _p("lastname", "Last name"), _p("phone", "Phone"),
        _p("mobilephone", "Mobile phone"), _p("company", "Company name"), _p("jobtitle", "Job title"),
        _p("website", "Website"), _p("address", "Street address"), _p("city", "City"), _p("state", "State"),
        _p("zip", "Postal code"), _p("country", "Country"), _p("lifecyclestage", "Lifecycle stage"),
        _p("hs_lead_status", "Lead status"), _OWNER, _CREATED,
        _p("lastmodifieddate", "Last modified", "datetime", readonly=True), _RECORD_ID),
        "A contact's email is unique in its portal: creating a second one is refused (conflict)."),
    "companies": CrmObject("Companies", "hs_lastmodifieddate", (
        _p("name", "Name"), _p("domain", "Domain"), _p("phone", "Phone"), _p("industry", "Industry"),
        _p("website", "Website"), _p("address", "Street address"), _p("city", "City"), _p("state", "State"),
        _p("zip", "Postal code"), _p("country", "Country"), _p("description", "Description"),
        _p("numberofemployees", "Number of employees", description=_AS_TEXT),
        _p("annualrevenue", "Annual revenue", description=_AS_TEXT), _p("lifecyclestage", "Lifecycle stage"),
        _OWNER, _CREATED, _p("hs_lastmodifieddate", "Last modified", "datetime", readonly=True), _RECORD_ID)),
    "deals": CrmObject("Deals", "hs_lastmodifieddate", (
        _p("dealname", "Deal name"), _p("amount", "Amount", description=_AS_TEXT), _p("dealstage", "Deal stage"),
        _p("pipeline", "Pipeline"), _p("closedate", "Close date", "datetime"), _p("dealtype", "Deal type"),
        _p("description", "Description"), _OWNER, _CREATED,
        _p("hs_lastmodifieddate", "Last modified", "datetime", readonly=True), _RECORD_ID),
        "HubSpot needs dealname and dealstage to create a deal."),
    "tickets": CrmObject("Tickets", "hs_lastmodifieddate", (
        _p("subject", "Subject"), _p("content", "Description"), _p("hs_pipeline", "Pipeline"),
        _p("hs_pipeline_stage", "Pipeline stage"), _p("hs_ticket_priority", "Priority"),
        _p("hs_ticket_category", "Category"), _OWNER, _CREATED,
        _p("hs_lastmodifieddate", "Last modified", "datetime", readonly=True), _RECORD_ID),
        "HubSpot needs subject, hs_pipeline and hs_pipeline_stage to create a ticket."),
}
#: What a record holds besides its properties, all HubSpot's to set.
RECORD_KEYS = ("id", "createdAt", "updatedAt", "archived", "archivedAt")
#: How HubSpot names a property: lower-case letters, digits and underscores, from a letter. Every
#: property the properties API names is read (HubSpot's hundreds, the portal's own), so mappings
#: may name any of them.
CUSTOM_PROPERTY = r"properties\.[a-z][a-z0-9_]*"
CUSTOM = ("Records hold every property the portal has, HubSpot's own (properties.hs_analytics_source) and "
          "the portal's (properties.customer_tier), named as HubSpot names them: mappings may name them, "
          "and writes set those HubSpot lets be written.")


def _schema(name: str, obj: CrmObject) -> EntitySchema:
    fields = (
        EntityField("id", "ID", readonly=True),
        EntityField("properties", "Properties", "object", fields=obj.properties,
                    description="Written as {\"properties\": {...}}; read: these, and every other the portal has "
                                "(HubSpot's and its own)."),
        EntityField("createdAt", "Created", "datetime", readonly=True),
        EntityField("updatedAt", "Updated", "datetime", readonly=True),
        EntityField("archived", "Archived", "boolean", readonly=True),
    )
    return EntitySchema(name, obj.label, fields, description=" ".join(filter(None, (obj.description, CUSTOM))),
                        updated_field="updatedAt", supports_create=True, supports_update=True,
                        supports_delete=True, supports_since=True, custom_fields=CUSTOM_PROPERTY,
                        read_after_write=True)


SCHEMAS = [_schema(name, obj) for name, obj in OBJECTS.items()]


@hookimpl
def provider_info():
    return INFO


@hookimpl
def entity_schemas():
    return SCHEMAS


# ---------------------------------------------------------------- auth


@hookimpl
def authorization_url(ctx, redirect_uri, state):
    query = {"client_id": ctx.setting("client_id"), "redirect_uri": redirect_uri,
             "scope": " ".join(ctx.provider.scopes), "state": state}
    return f"{ctx.url('authorize')}?{urlencode(query, quote_via=quote)}"


@hookimpl
async def exchange_code(ctx, code, redirect_uri):
    credentials = await oauth2.token_request(ctx, "authorization_code", code=code, redirect_uri=redirect_uri)
    # The token answer does not say which portal the user chose: the account's details do.
    account = await _account(ctx, token=credentials.secrets["access_token"])
    time_zone = account.get("timeZone")
    return dataclasses.replace(credentials, config={"time_zone": time_zone} if isinstance(time_zone, str) else {},
                               webhook_key=_portal(account))


@hookimpl
async def refresh_credentials(ctx):
    refresh_token = ctx.credentials.get("refresh_token")
    if not refresh_token:
        raise AuthFailed("the connection holds no refresh token: connect it again")
    # HubSpot's refresh token lasts until the app is uninstalled, and comes back unchanged.
    return await oauth2.token_request(ctx, "refresh_token", refresh_token=refresh_token)


@hookimpl
def request_auth(ctx):
    token = ctx.credentials.get("access_token")
    return RequestAuth(headers={"Authorization": f"Bearer {token}"} if token else {})


@hookimpl
async def disconnect(ctx):
    """Give the grant back: its refresh token is deleted at HubSpot (the app
    stays installed in the portal, as HubSpot has no uninstall call), unless
    another connection holds the same portal's grant, or the connection was
    made with a private app's token, which only its portal's admin revokes."""
    refresh_token = ctx.credentials.get("refresh_token")
    if ctx.extra.get("account_shared") or not refresh_token:
        return False
    # (The token is in the path: the hub's log shows the path without it.)
    await ctx.http.request("DELETE", ctx.url(path=f"/oauth/v1/refresh-tokens/{quote(refresh_token, safe='')}"),
                           authenticate=False, path_in_logs="/oauth/v1/refresh-tokens/…")
    return True


async def _account(ctx, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    account = await ctx.http.json("GET", ctx.url(path="/account-info/v3/details"), headers=headers)
    if not isinstance(account, dict):
        raise ProviderError("HubSpot answered the account's details with no object")
    return account


def _portal(account: dict[str, Any]) -> str:
    portal = account.get("portalId")
    if isinstance(portal, bool) or not isinstance(portal, (int, str)) or not str(portal).isdigit():
        raise ProviderError("HubSpot answered the account's details without its portalId")
    return str(portal)


@hookimpl
async def test_connection(ctx):
    account = await _account(ctx)
    return {"account": _portal(account), "time_zone": account.get("timeZone"),
            "currency": account.get("companyCurrency"), "ui_domain": account.get("uiDomain"),
            "data_hosting": account.get("dataHostingLocation")}


# ---------------------------------------------------------------- errors


#: The names HubSpot gives its limits in a 429's policyName.
SEARCH_POLICY = "SECONDLY"
DAILY_POLICY = "DAILY"
#: How long a daily limit holds a connection whose portal's time zone (its reset) is not known.
DAILY_UNKNOWN_RESET = 3600.0
EXISTING_ID = re.compile(r"Existing ID: (\d+)")
INVALID_PROPERTIES = "Property values were not valid: "


@hookimpl
def describe_error(response, ctx):
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return None
    message = body["message"]
    status = response.status_code
    if status == 429:
        return _rate_limited(message, body.get("policyName"), response, ctx)
    # CRM errors name a category; the token endpoint's name their kind as status (BAD_REFRESH_TOKEN).
    category = body.get("category") or body.get("status")
    details = {key: body[key] for key in ("category", "subCategory", "status", "errors", "context",
                                          "correlationId") if key in body}
    existing = EXISTING_ID.search(message)
    if existing:
        details["existing_id"] = existing[1]
    code = category.lower() if status in (400, 409, 422) and isinstance(category, str) else None
    fields = _fields_named(body)
    if existing and not fields:
        fields = ["properties.email"]  # (a contact's only unique property)
    return ErrorDescription(message, fields=fields, details=details, code=code)


def _fields_named(body: dict[str, Any]) -> list[str]:
    """The properties an error names, as paths into records: ``errors[].context.propertyName``,
    or the list a property validation error embeds in its message."""
    names: list[str] = []
    for error in body.get("errors") if isinstance(body.get("errors"), list) else []:
        context = error.get("context") if isinstance(error, dict) else None
        named = context.get("propertyName") if isinstance(context, dict) else None
        names += [n for n in (named if isinstance(named, list) else [named]) if isinstance(n, str)]
    message = body["message"]
    if message.startswith(INVALID_PROPERTIES):
        try:
            problems = json.loads(message[len(INVALID_PROPERTIES):])
        except (ValueError, RecursionError):
            problems = []
        names += [p["name"] for p in problems if isinstance(p, dict) and isinstance(p.get("name"), str)]
    return [f"properties.{name}" for name in dict.fromkeys(names)]


def _rate_limited(message: str, policy: Any, response, ctx) -> RateLimited:
    """HubSpot's 429s carry no Retry-After: the body's policyName says which limit, and so how
    long it lasts. The daily one ends at the portal's midnight."""
    if policy == DAILY_POLICY:
        time_zone = ctx.config.get("time_zone")
        if not time_zone:
            # (A private app's connection: its portal's midnight is not known. Held until UTC's, it
            # could be refused again for a day more: an hour at a time, a call an hour is refused.)
            return RateLimited(message, retry_after=DAILY_UNKNOWN_RESET)
        return RateLimited(message, retry_after=_until_midnight(time_zone))
    if policy == SEARCH_POLICY:
        return RateLimited(message, limit="search", retry_after=1.0)
    try:
        interval = float(response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds") or "") / 1000
    except ValueError:
        interval = TEN_SECONDLY[1]
    return RateLimited(message, retry_after=interval if 0 < interval <= TEN_SECONDLY[1] else TEN_SECONDLY[1])


def _until_midnight(time_zone: Any) -> float:
    try:
        zone = ZoneInfo(time_zone) if isinstance(time_zone, str) and time_zone else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        zone = timezone.utc
    now = datetime.now(zone)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return max(1.0, (midnight.astimezone(timezone.utc) - now.astimezone(timezone.utc)).total_seconds())


# ---------------------------------------------------------------- properties


def _object(entity: str) -> CrmObject:
    obj = OBJECTS.get(entity)
    if obj is None:
        raise NotFound(f"HubSpot has no {entity!r} here (entities: {', '.join(OBJECTS)})")
    return obj


#: How long a connection's list of its portal's properties is kept (seconds), and for how many
#: connections and objects at most.
PROPERTIES_TTL = 300.0
PROPERTIES_KEPT = 2048
#: A property name taken from the properties API (it goes into URLs and bodies): HubSpot's rule,
#: upper case allowed for names older portals may hold.
PROPERTY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")


@dataclasses.dataclass(frozen=True)
class _Properties:
    """A portal's properties of an object type, as kept: those read, every one
    it has, and those whose value HubSpot alone sets (``readOnlyValue``, or calculated)."""

    until: float
    read: tuple[str, ...]
    every: frozenset[str]
    read_only: frozenset[str] = frozenset()
    #: Whether the properties API listed them (not: the grant was refused the list, and only the
    #: declared ones are known).
    listed: bool = True


_known: collections.OrderedDict[tuple[str, str | None, str], _Properties] = collections.OrderedDict()


async def _read(ctx, entity: str) -> tuple[str, ...]:
    """The properties a listing or a read asks for: the declared ones, then
    every other the properties API (``GET /crm/v3/properties/{type}``) names,
    the portal's own (custom) ones and HubSpot's (``hubspotDefined``), or the
    portal's own only with the setting ``properties=own``.

    The list is kept a few minutes per connection and object type, in this
    process: HubSpot's windows are tight (110 calls in ten seconds, shared
    with the portal's other apps), and a listing is a call a page (a search
    a page for changes), so asking the list again each page would spend up to
    half of them on it; nor can a cursor carry it (hundreds of names, in every
    cursor the API hands out and sync keeps). A property the portal adds shows
    within ``PROPERTIES_TTL`` (at once after a write naming it); one it
    archives meanwhile is only asked for in vain (HubSpot leaves unknown
    names out of what it answers)."""
    return (await _known_properties(ctx, entity)).read


@hookimpl
async def account_fields(ctx, entity):
    """Every property the portal has (asked afresh: one added a minute ago
    counts, and the list kept is renewed with it), as mappings name them;
    None when the grant may not list them (nothing to tell)."""
    known = await _known_properties(ctx, entity, fresh=True)
    return [f"properties.{name}" for name in sorted(known.every)] if known.listed else None


async def _known_properties(ctx, entity: str, fresh: bool = False) -> _Properties:
    """The portal's properties of ``entity`` as kept for the connection (see
    ``_read``); ``fresh``: asked again, whatever is kept."""
    if not ctx.connection_id:  # (a connection not saved yet: nothing to keep it by)
        return await _properties_of(ctx, entity)
    key = (ctx.connection_id, ctx.account, entity)
    held = _known.get(key)
    if fresh or held is None or held.until <= time.monotonic():
        held = _known[key] = await _properties_of(ctx, entity)
        while len(_known) > PROPERTIES_KEPT:
            _known.popitem(last=False)
    _known.move_to_end(key)
    return held


async def _properties_of(ctx, entity: str) -> _Properties:
    """The declared properties of ``entity``, then the portal's own (those
    HubSpot did not define: ``hubspotDefined`` not true), then HubSpot's
    others (``hs_analytics_source``, ``fax``: a portal has hundreds), archived
    ones left out (the properties API leaves them out), and Sensitive Data
    ones (``dataSensitivity``), whose values take scopes not asked for.

    HubSpot answers only the properties a request names, and a mapping may
    name any of them: all are asked for. It costs a call a page more where
    their names pass a URL's or a search body's length (a batch read of the
    page, ``_batch_read``: most portals' contacts and companies), and larger
    answers. The setting ``properties=own`` leaves HubSpot's others out
    (what a mapping names of them then maps null).

    A grant refused the list (403: a private app given fewer scopes) reads
    the declared properties only."""
    declared = tuple(p.name for p in _object(entity).properties)
    until = time.monotonic() + PROPERTIES_TTL
    try:
        body = await ctx.http.json("GET", ctx.url(path=f"/crm/v3/properties/{entity}"))
    except PermissionDenied:
        return _Properties(until, declared, frozenset(declared), listed=False)
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise ProviderError(f"HubSpot answered the {entity} properties without their results")
    # (Sensitive Data properties are listed too, but their values take the sensitive scopes,
    # which the plugin does not ask for: not read.)
    named = [p for p in results if isinstance(p, dict) and isinstance(p.get("name"), str)
             and PROPERTY_NAME.fullmatch(p["name"]) and p.get("archived") is not True
             and p.get("dataSensitivity") in (None, "non_sensitive")]
    own = [p["name"] for p in named if p.get("hubspotDefined") is not True and p["name"] not in declared]
    hubspots = [p["name"] for p in named if p.get("hubspotDefined") is True and p["name"] not in declared]
    if _read_properties(ctx) == "own":
        hubspots = []
    read_only = frozenset(p["name"] for p in named if p.get("calculated") is True or (
        isinstance(p.get("modificationMetadata"), dict) and p["modificationMetadata"].get("readOnlyValue") is True))
    return _Properties(until, tuple(dict.fromkeys((*declared, *own, *hubspots))),
                       frozenset(declared).union(p["name"] for p in named), read_only)


#: What ``properties=`` (``HUB_HUBSPOT_PROPERTIES``) may say: every property, or the declared and the portal's own.
READ_PROPERTIES = ("all", "own")


def _read_properties(ctx) -> str:
    """The setting ``properties``: ``all`` (the default) or ``own``."""
    said = str(ctx.settings.get("properties") or "all").strip().lower()
    if said not in READ_PROPERTIES:
        raise ConfigurationError(f"HUB_HUBSPOT_PROPERTIES must be one of {', '.join(READ_PROPERTIES)}, "
                                 f"not {said!r}")
    return said


#: The longest URL sent: HubSpot refuses one past about 16,000 characters (414), and a portal's
#: properties, each asked for by name (``properties=a%2Cb…``), pass that at a few hundred; other
#: integrations report 414s from about 8 KB, so a margin.
URL_MAX = 7_000
#: The longest search body sent: "If the body of your request exceeds 3,000 characters, a 400
#: error will be returned" (CRM search, Limitations).
SEARCH_BODY_MAX = 3_000


def _fits(url: str, params: dict[str, Any]) -> bool:
    return len(url) + 1 + len(urlencode(params)) <= URL_MAX


async def _batch_read(ctx, entity: str, ids: list[str], properties: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records ``ids`` with ``properties`` (in the body: no URL to
    outgrow), in the order of ``ids``; those HubSpot no longer has (archived
    meanwhile, 207 with an ``OBJECT_NOT_FOUND`` error) are left out."""
    found: dict[Any, dict[str, Any]] = {}
    # (A search's page holds up to 200 ids; a batch read takes 100.)
    for start in range(0, len(ids), BATCH_READ_LIMIT):
        body = {"properties": list(properties),
                "inputs": [{"id": record_id} for record_id in ids[start:start + BATCH_READ_LIMIT]]}
        # (A read: sent again after a lost answer, it changes nothing.)
        answer = await ctx.http.json("POST", ctx.url(path=f"/crm/v3/objects/{entity}/batch/read"), json=body,
                                     idempotent=True)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise ProviderError(f"HubSpot answered the batch read of {entity} without its results")
        found.update((r.get("id"), r) for r in results)
    return [found[record_id] for record_id in ids if record_id in found]


#: Most ids one batch read takes.
BATCH_READ_LIMIT = 100


# ---------------------------------------------------------------- records


#: Most records HubSpot lists in a page, and searches.
LIST_LIMIT, SEARCH_LIMIT = 100, 200


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    properties = await _read(ctx, entity)
    if since is not None:
        return await _search(ctx, entity, cursor, page_size, since, properties)
    url = ctx.url(path=f"/crm/v3/objects/{entity}")
    params: dict[str, Any] = {"limit": max(1, min(page_size, LIST_LIMIT))}
    if cursor:
        params["after"] = cursor
    asked = {**params, "properties": ",".join(properties)}
    fits = _fits(url, asked)
    # A portal of so many properties that the URL would be refused: the page's ids listed, then
    # read with them all (two calls a page).
    body = await ctx.http.json("GET", url, params=asked if fits else {**params, "properties": "hs_object_id"})
    records, after = _page(body, entity)
    if after is not None and after == cursor:
        raise ProviderError(f"HubSpot answered the same {entity} cursor again")
    if not fits:
        records = await _batch_read(ctx, entity, [str(r.get("id")) for r in records], properties)
    return Page(records=records, next_cursor=after)


async def _search(ctx, entity: str, cursor: str | None, page_size: int, since: datetime,
                  properties: tuple[str, ...]) -> Page:
    """Records modified at or after ``since``, in ascending id order, a page
    being a search of its own for ids after the last one listed (the cursor).

    HubSpot's search pages by offset (``after``) and refuses to page past
    10,000 results; ordered by id and started again after the last id, no
    search goes past its first page, however many records changed, and a
    record changed (or archived) meanwhile moves no other out of the listing."""
    obj = _object(entity)
    filters = [{"propertyName": obj.modified, "operator": "GTE", "value": str(_ms_ceil(since))}]
    if cursor:
        if not (cursor.isascii() and cursor.isdigit()):
            raise ValidationFailed("this cursor is not one of a modified-since listing", code="invalid_cursor")
        filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": cursor})
    body = {"filterGroups": [{"filters": filters}], "sorts": [{"propertyName": "hs_object_id",
                                                                "direction": "ASCENDING"}],
            "properties": list(properties), "limit": max(1, min(page_size, SEARCH_LIMIT))}
    # A portal of so many properties that naming them passes the search's body limit: the page's
    # ids searched, then read with them all (two calls a page; a batch read is no search call).
    fits = len(json.dumps(body, separators=(",", ":"))) <= SEARCH_BODY_MAX
    if not fits:
        body["properties"] = ["hs_object_id"]
    # (A search reads: sent again after a lost answer, it changes nothing.)
    answer = await ctx.http.json("POST", ctx.url(path=f"/crm/v3/objects/{entity}/search"), json=body,
                                 idempotent=True)
    listed, after = _page(answer, entity)
    records = listed if fits else await _batch_read(ctx, entity, [str(r.get("id")) for r in listed], properties)
    if after is None:
        return Page(records=records)
    # (The cursor goes on from the last id searched, though a batch read missed it: archived since.)
    last = listed[-1].get("id")
    if not isinstance(last, str) or not last.isdigit() or last == cursor:
        raise ProviderError(f"HubSpot's search of {entity} gave no id to go on from")
    return Page(records=records, next_cursor=last)


def _page(body: Any, entity: str) -> tuple[list[dict[str, Any]], str | None]:
    """The records of a list or search answer and its ``paging.next.after``
    (``None`` on the last page).

    :raises ProviderError: no list of records, or more said to follow with
        no way to them (an empty page, a next link without ``after``)."""
    records = body.get("results") if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ProviderError(f"HubSpot answered the {entity} listing without its results")
    paging = body.get("paging")
    following = paging.get("next") if isinstance(paging, dict) else None
    if following is None:
        return records, None
    after = following.get("after") if isinstance(following, dict) else None
    if not records or not isinstance(after, str) or not after:
        raise ProviderError(f"HubSpot said more {entity} follow but gave no page to go on from")
    return records, after


def _ms_ceil(moment: datetime) -> int:
    """``moment`` in epoch milliseconds, rounded up: HubSpot keeps times to the
    millisecond, and a record of the millisecond before ``since`` is not at or after it."""
    return -((datetime(1970, 1, 1, tzinfo=timezone.utc) - moment) // timedelta(milliseconds=1))


def _record_url(ctx, entity: str, record_id: str) -> str:
    return ctx.url(path=f"/crm/v3/objects/{entity}/{quote(str(record_id), safe='')}")


@hookimpl
async def get_record(ctx, entity, record_id):
    """One request (the portal's properties known): a GET naming them, or, for
    a portal of so many that the URL would be refused, a batch read of one."""
    properties = await _read(ctx, entity)
    url, params = _record_url(ctx, entity, record_id), {"properties": ",".join(properties)}
    if _fits(url, params):
        return await ctx.http.json("GET", url, params=params)
    record_id = str(record_id)
    found = await _batch_read(ctx, entity, [record_id], properties) if record_id.isdigit() else []
    if not found:
        raise NotFound(f"HubSpot has no {entity} record {record_id}")
    return found[0]


def _properties(entity: str, data: dict[str, Any]) -> dict[str, Any]:
    """What a write sends: ``data["properties"]``. A record's own keys (its id
    and times, as a record read and sent back holds them) are HubSpot's to set."""
    _object(entity)
    other = sorted(key for key in data if key != "properties" and key not in RECORD_KEYS)
    properties = data.get("properties", {})
    if other or not isinstance(properties, dict):
        raise ValidationFailed('HubSpot records are written as {"properties": {"name": value, ...}}',
                               code="invalid_data", fields=other or ["properties"])
    return properties


@hookimpl
async def create_record(ctx, entity, data):
    # No idempotency key at HubSpot: the core does not send a create again after a lost answer.
    # The answer holds the properties written only: the schema's read_after_write has it read whole.
    properties = _properties(entity, data)
    created = await ctx.http.json("POST", ctx.url(path=f"/crm/v3/objects/{entity}"),
                                  json={"properties": properties})
    _forget_if_unknown(ctx, entity, properties)
    return created


@hookimpl
async def update_record(ctx, entity, record_id, data, base):
    properties = await _changed_or_writable(ctx, entity, _properties(entity, data), base)
    updated = await ctx.http.json("PATCH", _record_url(ctx, entity, record_id), json={"properties": properties})
    _forget_if_unknown(ctx, entity, properties)
    return updated


async def _changed_or_writable(ctx, entity: str, properties: dict[str, Any], base: Any) -> dict[str, Any]:
    """What an update sends: ``properties`` without those whose value HubSpot
    alone sets, where they hold what the version changed (``base``) held.

    A record read holds every property, HubSpot's read-only ones among them
    (``hs_analytics_num_page_views``), and sync sends its ``properties`` back
    whole with the tenant's change: HubSpot refuses any read-only one written
    (``READ_ONLY_VALUE``), unchanged or not. One the change did set is sent,
    and refused as HubSpot refuses it."""
    held = base.get("properties") if isinstance(base, dict) else None
    if not isinstance(held, dict):
        return properties
    read_only = (await _known_properties(ctx, entity)).read_only
    return {name: value for name, value in properties.items()
            if not (name in read_only and name in held and held[name] == value)}


def _forget_if_unknown(ctx, entity: str, written: dict[str, Any]) -> None:
    """A property written that the portal's list kept here does not name
    (added since: HubSpot took it) has the list asked again, for the read
    that follows the write and the listings after."""
    key = (ctx.connection_id, ctx.account, entity)
    held = _known.get(key)
    if held is not None and not held.every.issuperset(written):
        del _known[key]


@hookimpl
async def delete_record(ctx, entity, record_id):
    # Archived (restorable in HubSpot for 90 days, and no longer listed); 204 whatever the id.
    _object(entity)
    await ctx.http.request("DELETE", _record_url(ctx, entity, record_id))
    return True


# ---------------------------------------------------------------- webhooks


#: subscriptionType's object: the entity.
SUBSCRIBED = {"contact": "contacts", "company": "companies", "deal": "deals", "ticket": "tickets"}
#: subscriptionType's change: the hub's action (others, a merge or an association, are "changed").
CHANGES = {"creation": "created", "propertyChange": "updated", "deletion": "deleted", "restore": "updated",
           "privacyDeletion": REDACTED}
#: What HubSpot decodes in the URI before signing it (v3).
SIGNED_DECODED = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)


def _check_signature(ctx, request) -> None:
    """The delivery's v3 signature (with its time), else its v1 one.

    v3: base64 HMAC-SHA256 keyed with the app's client secret over method,
    URI, raw body and ``X-HubSpot-Request-Timestamp`` (milliseconds). v1, which
    HubSpot still sends (``X-HubSpot-Signature-Version: v1``): hex SHA-256 of
    the client secret followed by the body; it signs no time, so a v1
    delivery cannot be stale. A delivery carrying v3 is judged by v3 alone.

    :raises WebhookRejected: unsigned, wrong, or (v3) older than the tolerance.
    """
    # A private app signs its webhooks with its own client secret; the OAuth app, with the operator's.
    # (A connection made by OAuth holds no client_secret: its credentials are the grant's.)
    secret = (ctx.credentials.get("client_secret") or ctx.setting("client_secret")).encode()
    v3 = request.header("X-HubSpot-Signature-v3")
    if v3 is not None:
        stamp = request.header("X-HubSpot-Request-Timestamp") or ""
        sent = signed_unix_time(stamp, milliseconds=True)
        uri = SIGNED_DECODED.sub(lambda m: chr(int(m[1], 16)), request.url)
        signed = request.method.encode() + uri.encode() + request.body + stamp.encode()
        expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest())
        if not hmac.compare_digest(expected, v3.encode()):
            raise WebhookRejected("X-HubSpot-Signature-v3 does not match")
        if abs(time.time() - sent) > ctx.provider.webhook_tolerance_seconds:
            raise WebhookRejected("the delivery's timestamp is outside the tolerance", code="webhook_stale")
        return
    v1 = request.header("X-HubSpot-Signature")
    if v1 is None or (request.header("X-HubSpot-Signature-Version") or "v1").lower() != "v1":
        raise WebhookRejected("no X-HubSpot-Signature-v3, nor a v1 X-HubSpot-Signature")
    if str(ctx.settings.get("webhook_v1") or "on").lower() in ("off", "false", "0", "no"):
        # (v1 signs no time: a delivery captured once, its v3 headers removed, would pass at any age.)
        raise WebhookRejected("a v1 signature only, which HUB_HUBSPOT_WEBHOOK_V1=off refuses")
    if not hmac.compare_digest(hashlib.sha256(secret + request.body).hexdigest().encode(), v1.encode()):
        raise WebhookRejected("X-HubSpot-Signature (v1) does not match")


def _events(body: bytes) -> list[dict[str, Any]]:
    try:
        events = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected("malformed delivery: body") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise WebhookRejected("malformed delivery: not a list of events")
    return events


@hookimpl
def webhook_connection_key(request):
    """Every portal a delivery names: HubSpot batches the events of several."""
    try:
        events = _events(request.body)
    except WebhookRejected:
        return None
    portals = [str(e["portalId"]) for e in events if isinstance(e.get("portalId"), int)
               and not isinstance(e.get("portalId"), bool)]
    return list(dict.fromkeys(portals))[:100] or None


@hookimpl
def verify_app_webhook(ctx, request):
    """A signed delivery of portals no connection has (the connection deleted,
    the app still installed there) is acknowledged, so that HubSpot neither
    retries it nor counts the app's endpoint as failing: a connection made
    later starts with a full pass, which brings what these events said."""
    try:
        _check_signature(ctx, request)
    except WebhookRejected as exc:
        if exc.code == "webhook_stale":
            raise
        return False
    _events(request.body)
    return True


@hookimpl
def verify_webhook(ctx, request):
    _check_signature(ctx, request)
    return [_event(event) for event in _events(request.body) if str(event.get("portalId")) == ctx.account]


def _hubspot_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.isascii() and value.isdigit())


def _event(event: dict[str, Any]) -> WebhookEvent:
    try:
        kind, _, change = event["subscriptionType"].partition(".")
        occurred = datetime.fromtimestamp(int(event["occurredAt"]) / 1000, tz=timezone.utc)
        event_id = event["eventId"]
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError, OSError):
        raise WebhookRejected("malformed delivery: an event without its type, time or id") from None
    object_id = event.get("objectId")
    if not _hubspot_id(event_id) or (object_id is not None and not _hubspot_id(object_id)):
        raise WebhookRejected("malformed delivery: an event or object id is not a number")
    # HubSpot says an eventId alone is not guaranteed unique: with the change, the object and the
    # time, it is (a retried delivery repeats them all).
    dedup_key = f"{event_id}:{kind}.{change}:{object_id}:{event['occurredAt']}"
    entity = SUBSCRIBED.get(kind) if object_id is not None else None
    action = CHANGES.get(change, "changed") if entity else "changed"
    if action == REDACTED:
        # A privacy deletion: erased everywhere, its body not kept (it names the person).
        return WebhookEvent(dedup_key=dedup_key, type=f"{kind}.privacy_deletion", entity=entity,
                            action=REDACTED, record_id=str(object_id), occurred_at=occurred)
    # (A merge, an association change, whose ids are fromObjectId/toObjectId: kept, changing no record.)
    named = f"{kind}.{action}" if action != "changed" else f"{kind}.{change}"
    return WebhookEvent(dedup_key=dedup_key, type=named, entity=entity, action=action,
                        record_id=str(object_id) if object_id is not None else None, occurred_at=occurred, raw=event)
