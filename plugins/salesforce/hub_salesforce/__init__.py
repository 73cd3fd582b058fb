"""Salesforce through its REST API: OAuth 2 (web-server flow with PKCE) per
org, production or sandbox, on the org's own host (``instance_url``, which a
refresh may move); accounts, contacts, leads and opportunities read with SOQL
(``SystemModstamp`` for increments, query locators for pages, the delete log
for what was deleted since; a query too long for a URL in a composite
request's body) and written through the sObject resources;
Salesforce's error arrays as hub errors; the org's daily API allocation
(``403 REQUEST_LIMIT_EXCEEDED``) as a rate limit. No webhooks: Salesforce
has no signed HTTP deliveries. The fake org is :mod:`hub_salesforce.testing`."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from hub import hookimpl, oauth2
from hub.types import (
    AuthFailed,
    Credentials,
    EntityField,
    EntitySchema,
    ErrorDescription,
    NotFound,
    Page,
    ProviderError,
    ProviderInfo,
    RateLimit,
    RateLimited,
    RequestAuth,
    ValidationFailed,
)

#: The REST API version every URL names (``HUB_SALESFORCE_API_VERSION`` changes it).
API_VERSION = "v62.0"
#: Salesforce's query batches: 2,000 records at most, 200 at least (``Sforce-Query-Options: batchSize=``).
MIN_BATCH, MAX_BATCH = 200, 2000
#: How long the org's daily allocation is taken to stay used up once Salesforce refuses a call
#: (``HUB_SALESFORCE_LIMIT_WAIT_SECONDS``): its 24 hours roll, so calls free up as old ones age out.
LIMIT_WAIT_SECONDS = 3600.0
#: How long to wait when Salesforce refuses a call because the org runs as many long requests
#: (20 s or more) as it allows at once (``HUB_SALESFORCE_CONCURRENCY_WAIT_SECONDS``): the same
#: error code as the daily allocation's, but it frees as soon as one of them ends.
CONCURRENCY_WAIT_SECONDS = 20.0
#: Longest URL (path and query string) a query is sent in, ``GET …/query?q=``. Salesforce's
#: hard limit is 16,384 bytes of URL and headers together (414 or 431 beyond), but it expands a
#: query's text on its side before running it, and recommends URLs of at most 2,000 characters
#: (Help article 000386264): most objects' queries fit; a longer one goes in the body of a
#: composite request instead (``_composite_query``), as that article advises.
MAX_QUERY_URL = 2_000
#: Longest SOQL statement Salesforce runs (100,000 characters, its default): a query longer than
#: that is refused before any call (``too_many_fields``), in a URL or a composite body alike.
MAX_SOQL_CHARS = 100_000
#: The composite subrequest's reference (letters, digits and underscores, as Salesforce requires).
QUERY_REFERENCE = "listing"
#: How far back the delete log answers (Salesforce: 15 days before the day of the call).
DELETE_LOG_DAYS = 14
#: How much earlier than ``since`` the delete log is read (see ``_deleted_since``).
DELETE_LOG_OVERLAP = timedelta(hours=1)
ENVIRONMENTS = {"production": ("authorize", "token"), "sandbox": ("sandbox_authorize", "sandbox_token")}

INFO = ProviderInfo(
    name="salesforce",
    label="Salesforce",
    logo="https://www.salesforce.com/favicon.ico",
    category="crm",
    auth_type="oauth2",
    description="Salesforce orgs (production or sandbox): accounts, contacts, leads and opportunities "
                "(REST API, SOQL).",
    urls={
        "api": "{instance_url}/services/data/{api_version}",
        "authorize": "{login_url}/services/oauth2/authorize",
        "token": "{login_url}/services/oauth2/token",
        "sandbox_authorize": "{sandbox_login_url}/services/oauth2/authorize",
        "sandbox_token": "{sandbox_login_url}/services/oauth2/token",
    },
    url_defaults={"api_version": API_VERSION, "login_url": "https://login.salesforce.com",
                  "sandbox_login_url": "https://test.salesforce.com"},
    # Salesforce publishes no per-second limit (its limit is the org's allocation of calls over a
    # rolling 24 hours, which depends on its edition and licences): this is the hub's own pace.
    # Declared, it is also what the core refuses the connection's calls by, unsent, once
    # Salesforce answers REQUEST_LIMIT_EXCEEDED.
    rate_limit=RateLimit(requests_per_second=25, burst=25),
    # The org's 24 hours of calls, used and allowed: HUB_SALESFORCE_ALLOCATION_SHARE caps the hub's part.
    allocation_header="Sforce-Limit-Info",
    scopes=("api", "refresh_token"),
    supports_pkce=True,
    supports_webhooks=False,
    config_fields=(
        EntityField("environment", "Environment", description="production (login.salesforce.com) or sandbox "
                    "(test.salesforce.com); given when authorizing, production by default"),
        EntityField("instance_url", "Instance URL", readonly=True,
                    description="the org's API host, from the token answer (a refresh may move it)"),
    ),
)

F = EntityField


def _times() -> tuple[EntityField, ...]:
    return (F("OwnerId", "Owner ID"), F("CreatedDate", "Created", "datetime", readonly=True),
            F("LastModifiedDate", "Last modified", "datetime", readonly=True),
            F("SystemModstamp", "System modstamp", "datetime", readonly=True,
                description="changed by every change, Salesforce's own too: what increments follow"))


def _address(prefix: str, label: str) -> tuple[EntityField, ...]:
    return tuple(F(f"{prefix}{part}", f"{label} {part.lower()}".replace("postalcode", "postal code"))
                 for part in ("Street", "City", "State", "PostalCode", "Country"))


FIELDS = {
    "accounts": (
        F("Id", "ID", readonly=True), F("Name", "Name", required=True), F("AccountNumber", "Account number"),
        F("Type", "Type"), F("Industry", "Industry"), F("Phone", "Phone"), F("Fax", "Fax"),
        F("Website", "Website"), F("Description", "Description"),
        F("NumberOfEmployees", "Employees", "integer"), F("AnnualRevenue", "Annual revenue", "number"),
        *_address("Billing", "Billing"), *_address("Shipping", "Shipping"), F("ParentId", "Parent account ID"),
        *_times()),
    "contacts": (
        F("Id", "ID", readonly=True), F("Salutation", "Salutation"), F("FirstName", "First name"),
        F("LastName", "Last name", required=True), F("Email", "Email"), F("Phone", "Phone"),
        F("MobilePhone", "Mobile phone"), F("Title", "Title"), F("Department", "Department"),
        F("AccountId", "Account ID"), *_address("Mailing", "Mailing"), F("LeadSource", "Lead source"),
        F("Birthdate", "Birthdate", "date"), F("Description", "Description"), *_times()),
    "leads": (
        F("Id", "ID", readonly=True), F("Salutation", "Salutation"), F("FirstName", "First name"),
        F("LastName", "Last name", required=True), F("Company", "Company", required=True), F("Title", "Title"),
        F("Email", "Email"), F("Phone", "Phone"), F("MobilePhone", "Mobile phone"), F("Website", "Website"),
        F("Status", "Status", description="the org's default lead status when left out"),
        F("LeadSource", "Lead source"), F("Industry", "Industry"), F("Rating", "Rating"),
        F("NumberOfEmployees", "Employees", "integer"), F("AnnualRevenue", "Annual revenue", "number"),
        F("Street", "Street"), F("City", "City"), F("State", "State"), F("PostalCode", "Postal code"),
        F("Country", "Country"), F("Description", "Description"),
        F("IsConverted", "Converted", "boolean", readonly=True), *_times()),
    "opportunities": (
        F("Id", "ID", readonly=True), F("Name", "Name", required=True), F("AccountId", "Account ID"),
        F("StageName", "Stage", required=True), F("CloseDate", "Close date", "date", required=True),
        F("Amount", "Amount", "number"), F("Probability", "Probability (%)", "number"), F("Type", "Type"),
        F("LeadSource", "Lead source"), F("NextStep", "Next step"), F("Description", "Description"),
        F("ForecastCategoryName", "Forecast category"), F("IsClosed", "Closed", "boolean", readonly=True),
        F("IsWon", "Won", "boolean", readonly=True), *_times()),
}
#: The hub's entity names and Salesforce's sObject types.
SOBJECTS = {"accounts": "Account", "contacts": "Contact", "leads": "Lead", "opportunities": "Opportunity"}
CUSTOM = ("Records hold every field of the org's, its own (custom, named …__c) too: mappings may name "
          "them, and writes set them (Salesforce checks them).")
#: How Salesforce names a custom field: letters, digits and single underscores, then ``__c``.
CUSTOM_FIELD = r"[A-Za-z][A-Za-z0-9_]*__c"
SCHEMAS = [
    EntitySchema(entity, entity.capitalize(), FIELDS[entity], id_field="Id", updated_field="SystemModstamp",
                 supports_create=True, supports_update=True, supports_delete=True, supports_since=True,
                 fixed_page_size=MAX_BATCH, description=CUSTOM, custom_fields=CUSTOM_FIELD,
                 read_after_write=True)
    for entity in SOBJECTS
]


@hookimpl
def provider_info():
    return INFO


@hookimpl
def entity_schemas():
    return SCHEMAS


# ---------------------------------------------------------------- auth


def _environment(config: dict[str, Any]) -> str:
    return str(config.get("environment") or "production")


@hookimpl
def authorization_url(ctx, redirect_uri, state, code_challenge, params):
    """The org's login host: ``login.salesforce.com``, or ``test.salesforce.com``
    for a sandbox (``?environment=sandbox`` on the authorize request)."""
    environment = (params.get("environment") or "production").strip().lower()
    if environment not in ENVIRONMENTS:
        raise ValidationFailed("environment must be production or sandbox", code="invalid_value",
                               fields=["environment"])
    params["environment"] = environment
    query = {"response_type": "code", "client_id": ctx.setting("client_id"), "redirect_uri": redirect_uri,
             "state": state, "scope": " ".join(INFO.scopes)}
    if code_challenge:
        query |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    return f"{ctx.url(ENVIRONMENTS[environment][0])}?{urlencode(query)}"


async def _token(ctx, grant_type: str, **fields: str | None) -> Any:
    """POST a grant to the token endpoint of the org's environment (the
    login host that issued the grant), with the app's client id and secret."""
    form = {"grant_type": grant_type, "client_id": ctx.setting("client_id"),
            "client_secret": ctx.setting("client_secret"), **{k: v for k, v in fields.items() if v is not None}}
    url = ctx.url(ENVIRONMENTS.get(_environment(ctx.config), ENVIRONMENTS["production"])[1])
    body = await ctx.http.json("POST", url, data=form, headers={"Accept": "application/json"}, authenticate=False)
    return body, url


def _credentials(ctx, body: Any, token_url: str) -> Credentials:
    """The token answer's tokens, and its ``instance_url`` as the connection's config.

    Salesforce signs the identity URL and issue time with the app's client
    secret (``signature``): a token answer that does not carry it right did
    not come from Salesforce for this app. The answer says no expiry: the
    session lasts as long as the org's timeout, and a call meeting its end
    (401 ``INVALID_SESSION_ID``) is refreshed by the core.
    """
    credentials = oauth2.token_credentials(body)
    identity, issued_at, signature = (str(body.get(key) or "") for key in ("id", "issued_at", "signature"))
    expected = base64.b64encode(hmac.new(ctx.setting("client_secret").encode(), (identity + issued_at).encode(),
                                         hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, signature):
        raise AuthFailed("Salesforce's token answer is not signed for this app (signature)", code="bad_signature")
    return dataclasses.replace(credentials, config={"instance_url": _instance_url(body.get("instance_url"),
                                                                                  token_url)})


def _instance_url(value: Any, token_url: str) -> str:
    """The org's API origin as the token answer names it: scheme and host
    only, and https unless the login host itself is not (a fake in tests)."""
    parts = urlsplit(value) if isinstance(value, str) else None
    secure = urlsplit(token_url).scheme == "https"
    if (parts is None or parts.scheme not in (("https",) if secure else ("https", "http")) or not parts.hostname
            or parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ProviderError("Salesforce's token answer names no usable instance_url")
    return f"{parts.scheme}://{parts.netloc}"


@hookimpl
async def exchange_code(ctx, code, redirect_uri, code_verifier):
    body, url = await _token(ctx, "authorization_code", code=code, redirect_uri=redirect_uri,
                             code_verifier=code_verifier)
    return _credentials(ctx, body, url)


@hookimpl
async def refresh_credentials(ctx):
    """A new session (Salesforce keeps the refresh token as it is), and the
    org's ``instance_url`` as it is now: an org moved to another instance
    answers its new host, which the core keeps as the connection's config."""
    refresh_token = ctx.credentials.get("refresh_token")
    if not refresh_token:
        raise AuthFailed("the connection holds no refresh token: connect it again")
    body, url = await _token(ctx, "refresh_token", refresh_token=refresh_token)
    return _credentials(ctx, body, url)


@hookimpl
def request_auth(ctx):
    token = ctx.credentials.get("access_token")
    return RequestAuth(headers={"Accept": "application/json", **({"Authorization": f"Bearer {token}"}
                                                                 if token else {})})


@hookimpl
async def test_connection(ctx):
    """The org the session reaches: its 18-character id (the connection's account)."""
    body = await _query(ctx, "SELECT Id, Name, OrganizationType, IsSandbox, InstanceName FROM Organization")
    org = body["records"][0] if isinstance(body, dict) and body.get("records") else None
    if not isinstance(org, dict) or not isinstance(org.get("Id"), str):
        raise ProviderError("Salesforce answered the Organization query without the org")
    return {"account": org["Id"], "name": org.get("Name"), "edition": org.get("OrganizationType"),
            "sandbox": org.get("IsSandbox"), "instance": org.get("InstanceName")}


# ---------------------------------------------------------------- errors


def _limit_wait(ctx, message: str) -> float:
    """How long a 403 ``REQUEST_LIMIT_EXCEEDED`` lasts, by what its message
    names: ``TotalRequests Limit exceeded.`` (the org's 24 hours of calls),
    or ``ConcurrentPerOrgLongTxn Limit exceeded`` / ``ConcurrentRequests
    (Concurrent API Requests) Limit exceeded`` (its long requests at once:
    seconds, not the hour that would hold every call of the connection)."""
    concurrent = "concurrent" in message.lower()
    setting, default = (("concurrency_wait_seconds", CONCURRENCY_WAIT_SECONDS) if concurrent
                        else ("limit_wait_seconds", LIMIT_WAIT_SECONDS))
    try:
        return float(getattr(ctx, "settings", {}).get(setting) or default)
    except ValueError:
        return default


@hookimpl
def describe_error(response, ctx):
    """Salesforce's error array ``[{"message", "errorCode", "fields"}]``: the
    messages, the fields named, and the first error code in lower case
    (``required_field_missing``); the token endpoint's ``{"error",
    "error_description"}``. Two codes say more than their status: the org's
    API allocation used up (a 403) is a rate limit, and a query locator
    Salesforce no longer has (expired) is a cursor to list again from the
    start (``invalid_cursor``)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body.get("error_description") or body["error"])
    if not isinstance(body, list) or not body or not all(isinstance(e, dict) for e in body):
        return None
    messages = "; ".join(str(e.get("message") or e.get("errorCode") or "") for e in body) or None
    code = str(body[0].get("errorCode") or "")
    fields = [str(name) for e in body if isinstance(e.get("fields"), list) for name in e["fields"]]
    kwargs = {"details": body, "fields": fields, "provider_status": response.status_code}
    if code == "REQUEST_LIMIT_EXCEEDED":
        return RateLimited(messages or "the org's API request limit is exceeded",
                           retry_after=_limit_wait(ctx, messages or ""), **kwargs)
    if code == "INVALID_QUERY_LOCATOR":
        return ValidationFailed(f"{messages}: the listing is to start again from its first page",
                                code="invalid_cursor", **kwargs)
    # (An ended or refused session keeps the core's provider_auth_failed, which clients match on.)
    named = code.lower() if code and response.status_code != 401 else None
    return ErrorDescription(messages or f"Salesforce answered HTTP {response.status_code}",
                            fields=list(dict.fromkeys(fields)), details=body, code=named)


# ---------------------------------------------------------------- records


def _sobject(entity: str) -> str:
    try:
        return SOBJECTS[entity]
    except KeyError:
        raise NotFound(f"Salesforce has no {entity!r} here (entities: {', '.join(SOBJECTS)})",
                       code="unknown_entity") from None


SALESFORCE_ID = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?")


def _id(entity: str, record_id: str) -> str:
    """A record id as it goes into a path: Salesforce's ids are 15 or 18
    letters and digits; anything else is no record (and never URL syntax)."""
    if not SALESFORCE_ID.fullmatch(record_id):
        raise NotFound(f"no {entity} record {record_id!r}: Salesforce ids are 15 or 18 letters and digits")
    return record_id


def _record(body: Any, entity: str) -> dict[str, Any]:
    """A record without its ``attributes`` (its type, which the entity says,
    and its URL, which names the API version: kept, a change of version
    would make every record look changed)."""
    if not isinstance(body, dict):
        raise ProviderError(f"Salesforce answered a {entity} record that is not an object")
    return {key: value for key, value in body.items() if key != "attributes" and key not in VIEWED}


async def _query(ctx, soql: str, batch: int | None = None) -> Any:
    """The answer to a SOQL query (its first batch): ``GET …/query?q=`` while
    the URL stays within ``MAX_QUERY_URL``, else the query as the one
    subrequest of a composite request, whose body carries it."""
    headers = {"Sforce-Query-Options": f"batchSize={batch}"} if batch else {}
    url = ctx.url(path="/query")
    if len(urlsplit(url).path) + len("?" + urlencode({"q": soql})) <= MAX_QUERY_URL:
        return await ctx.http.json("GET", url, params={"q": soql}, headers=headers or None)
    return await _composite_query(ctx, soql, headers)


async def _composite_query(ctx, soql: str, headers: dict[str, str]) -> Any:
    """A query too long for a URL, in the body of ``POST …/composite``: one
    ``GET …/query/?q=`` subrequest (its batch size in the subrequest's
    ``httpHeaders``), whose result carries the query's answer as a direct
    call would (``nextRecordsUrl`` included: the next batches are read from
    ``…/query/<locator>`` as usual).

    Salesforce checks the session and the org's allocation for the composite
    call as a whole (it counts as one call, and its subrequests run in its
    session): an ended session is a 401 of the call itself, refreshed by the
    core, and the allocation used up a 403 of it. What the query itself
    meets comes as the subrequest's status and error array within a 200 (an
    invalid field, a 500 ``UNKNOWN_EXCEPTION`` of Salesforce's own): the
    core takes that answer for the call's (``_subrequest_answer``), so that
    it is retried, refreshed, described and raised as a direct query's
    answer would be, never read as records."""
    subrequest: dict[str, Any] = {"method": "GET", "url": f"{_api_path(ctx)}/query/?{urlencode({'q': soql})}",
                                  "referenceId": QUERY_REFERENCE}
    if headers:
        subrequest["httpHeaders"] = headers
    # A query changes nothing: sent again after an outage or a timeout, it does no harm.
    return await ctx.http.json("POST", ctx.url(path="/composite"), idempotent=True, unwrap=_subrequest_answer,
                               json={"allOrNone": False, "compositeRequest": [subrequest]})


def _subrequest_answer(response: httpx.Response) -> httpx.Response:
    """The answer of the composite call's one subrequest, as Salesforce would
    have answered it to a call of its own: its status, headers and body.

    :raises ProviderError: the composite's answer holds no such result."""
    try:
        # (NaN and Infinity read as null, as the core reads a direct answer's.)
        body = response.json(parse_constant=lambda _constant: None)
    except (ValueError, RecursionError):
        body = None
    results = body.get("compositeResponse") if isinstance(body, dict) else None
    result = results[0] if isinstance(results, list) and len(results) == 1 else None
    status = result.get("httpStatusCode") if isinstance(result, dict) else None
    if (not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
            or result.get("referenceId") != QUERY_REFERENCE):
        raise ProviderError("Salesforce answered the composite query without its result")
    said = result.get("httpHeaders")
    return httpx.Response(status, json=result.get("body"), request=response.request,
                          headers={str(k): str(v) for k, v in said.items()} if isinstance(said, dict) else None)


def _api_path(ctx) -> str:
    """The REST API's path as Salesforce names it in a composite subrequest's
    URL (``/services/data/v62.0``): the version as ``ctx.url`` takes it."""
    return f"/services/data/{ctx.settings.get('api_version') or INFO.url_defaults['api_version']}"


def _soql_time(moment: datetime) -> str:
    """A SOQL datetime literal, to the second (Salesforce keeps no finer): floored, at or after keeps."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: A query locator and the position of the next batch, as ``nextRecordsUrl`` ends.
LOCATOR = re.compile(r"[0-9A-Za-z]{15,18}-[0-9]{1,9}")
NEXT_RECORDS = re.compile(r"/services/data/v[0-9]{1,3}\.[0-9]/query(?:All)?/(" + LOCATOR.pattern + ")")


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    """``SELECT <fields> FROM <type> [WHERE SystemModstamp >= since] ORDER BY
    SystemModstamp, Id``, then the query's next batches (``nextRecordsUrl``)
    while it is not ``done``.

    Salesforce sizes batches itself (200 to 2,000, as asked in
    ``Sforce-Query-Options``, or fewer): the schema declares
    ``fixed_page_size``. The cursor is the query locator and position that
    ``nextRecordsUrl`` ends with, never a URL: only such a locator is taken,
    so no cursor can send a call elsewhere. A locator Salesforce no longer
    has (it expires after 15 minutes unused) is ``invalid_cursor``: sync
    starts its pass over. The last page of a ``since`` listing carries, as
    ``deleted_ids``, what the delete log says was deleted since."""
    name = _sobject(entity)
    batch = max(MIN_BATCH, min(page_size, MAX_BATCH))
    if cursor:
        if not LOCATOR.fullmatch(cursor):
            raise ValidationFailed("not a Salesforce query cursor this plugin handed out", code="invalid_cursor")
        body = await ctx.http.json("GET", ctx.url(path=f"/query/{cursor}"),
                                   headers={"Sforce-Query-Options": f"batchSize={batch}"})
    else:
        where = f" WHERE SystemModstamp >= {_soql_time(since)}" if since else ""
        fields = await _fields(ctx, name)
        soql = f"SELECT {', '.join(fields)} FROM {name}{where} ORDER BY SystemModstamp, Id"
        if len(soql) > MAX_SOQL_CHARS:
            # (Sent, Salesforce would refuse it: a statement is 100,000 characters at most.)
            raise ProviderError(f"the org's {name} has {len(fields)} fields: a query naming them all is longer "
                                f"than the {MAX_SOQL_CHARS:,} characters Salesforce runs", code="too_many_fields")
        body = await _query(ctx, soql, batch)
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not isinstance(body.get("done"), bool):
        raise ProviderError(f"Salesforce answered the {name} query without its records")
    page = Page(records=[_record(r, entity) for r in records])
    if not body["done"]:
        found = NEXT_RECORDS.fullmatch(str(body.get("nextRecordsUrl") or ""))
        if not records or found is None or found.group(1) == cursor:
            raise ProviderError(f"Salesforce said more {name} records follow but gave no batch to go on from")
        page.next_cursor = found.group(1)
    elif since is not None:
        page.deleted_ids = await _deleted_since(ctx, name, since)
    return page


@hookimpl
async def account_fields(ctx, entity):
    """The org's fields of the entity's sObject (``describe``), its own
    (``__c``) among them: a mapping of one the org lacks is refused when saved."""
    return await _fields(ctx, _sobject(entity))


FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")
#: Fields a user's viewing a record changes, SystemModstamp not: not read, or a push's check
#: would take a record someone looked at for one changed at Salesforce.
VIEWED = frozenset({"LastViewedDate", "LastReferencedDate"})


async def _fields(ctx, name: str) -> list[str]:
    """Every field of the sObject in this org (``describe``), its own too:
    what a query selects, so that a listed record holds what a read of it
    (``GET /sobjects/<type>/<id>``, all fields) does. One call a listing."""
    body = await ctx.http.json("GET", ctx.url(path=f"/sobjects/{name}/describe"))
    described = body.get("fields") if isinstance(body, dict) else None
    names = [f["name"] for f in described or () if isinstance(f, dict) and isinstance(f.get("name"), str)
             and FIELD_NAME.fullmatch(f["name"]) and f["name"] not in VIEWED]  # (into the query text: only names)
    if not names:
        raise ProviderError(f"Salesforce described {name} without its fields")
    return names


async def _deleted_since(ctx, name: str, since: datetime) -> list[str]:
    """The ids of records of ``name`` deleted since ``since``, from the
    delete log (``/sobjects/<type>/deleted/``).

    The window starts an hour before ``since``: the log may not yet cover
    the last moments before the call (its ``latestDateCovered``), and the
    next pass's ``since`` follows the records' modification times, not the
    log's, so deletions of those moments are asked again (one known already
    is no news). It starts within the log's 15 days: of an older ``since``,
    the deletions the log no longer holds are found gone by the next full pass."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = max(since.astimezone(timezone.utc) - DELETE_LOG_OVERLAP, now - timedelta(days=DELETE_LOG_DAYS))
    if now - start < timedelta(minutes=2):
        return []  # (a since to come: nothing deleted yet; the log takes windows of more than a minute)
    body = await ctx.http.json("GET", ctx.url(path=f"/sobjects/{name}/deleted/"),
                               params={"start": _soql_time(start), "end": _soql_time(now)})
    deleted = body.get("deletedRecords") if isinstance(body, dict) else None
    if not isinstance(deleted, list):
        raise ProviderError(f"Salesforce answered the {name} delete log without its deletedRecords")
    return [str(d["id"]) for d in deleted if isinstance(d, dict) and isinstance(d.get("id"), str)]


@hookimpl
async def get_record(ctx, entity, record_id):
    name = _sobject(entity)
    # (No fields asked: all of them, the org's own too, as a listing selects.)
    body = await ctx.http.json("GET", ctx.url(path=f"/sobjects/{name}/{_id(entity, record_id)}"))
    return _record(body, entity)


def _data(data: dict[str, Any]) -> dict[str, Any]:
    """What a write sends: the fields, without a record's ``attributes`` sent back."""
    return {key: value for key, value in data.items() if key != "attributes"}


def _written_id(answer: Any, name: str) -> str:
    record_id = answer.get("id") if isinstance(answer, dict) else None
    if not isinstance(record_id, str) or not SALESFORCE_ID.fullmatch(record_id):
        raise ProviderError(f"Salesforce answered the creation of a {name} without its id")
    return record_id


@hookimpl
async def create_record(ctx, entity, data):
    # No idempotency key at Salesforce: the core does not send a create again after a lost answer.
    # The answer holds only the new id: the schema's read_after_write has the record read whole.
    name = _sobject(entity)
    created = await ctx.http.json("POST", ctx.url(path=f"/sobjects/{name}/"), json=_data(data))
    return {**_data(data), "Id": _written_id(created, name)}


@hookimpl
async def update_record(ctx, entity, record_id, data):
    name = _sobject(entity)
    await ctx.http.request("PATCH", ctx.url(path=f"/sobjects/{name}/{_id(entity, record_id)}"), json=_data(data))
    return {**_data(data), "Id": record_id}


@hookimpl
async def delete_record(ctx, entity, record_id):
    """To the org's recycle bin (15 days), and its delete log."""
    name = _sobject(entity)
    await ctx.http.request("DELETE", ctx.url(path=f"/sobjects/{name}/{_id(entity, record_id)}"))
    return True

