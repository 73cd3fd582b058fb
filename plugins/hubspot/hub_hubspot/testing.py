"""A fake HubSpot for tests, served over real HTTP.

It behaves like HubSpot where the plugin depends on it:

- OAuth 2: ``/oauth/authorize`` approves at once for the portal
  ``app.state.consenting_portal`` (the user's choice of account) and redirects
  back with a single-use code; ``POST /oauth/v1/token`` takes the form grant
  with the client id and secret in the body, answers access tokens of
  ``token_lifetime`` seconds (HubSpot's 1800) and the same lasting refresh
  token on each refresh; HubSpot's token errors (``BAD_AUTH_CODE``,
  ``BAD_REFRESH_TOKEN``, ...). ``GET /account-info/v3/details`` names the
  portal of a token.
- CRM v3 objects (contacts, companies, deals, tickets) of each portal: the
  list with ``limit`` (at most 100), ``after`` and ``properties`` and
  ``paging.next.after``; one object by id; create (201, answering only the
  properties written and a few of HubSpot's own), ``PATCH`` (likewise) and
  ``DELETE`` (archive, 204 whatever the id). Property values are text; unknown
  and read-only properties, bad emails and missing required properties are
  refused as HubSpot does; a second contact with an email already taken is a
  409 ``CONFLICT`` naming the existing id.
- Search (``POST .../search``): ``filterGroups`` (OR of ANDed filters, the
  usual operators, dates as epoch milliseconds or ISO), one sort, ``after``
  offsets, at most 200 a page, and no paging past ``search_cap`` results
  (HubSpot's 10,000) but a 400. Batch read (``POST .../batch/read``,
  ``properties`` and at most 100 ``inputs``; ids it does not have are a 207
  with an ``OBJECT_NOT_FOUND`` error).
- Properties (``GET /crm/v3/properties/{type}``): HubSpot's own
  (``hubspotDefined``) and the portal's (:func:`add_property`), archived ones
  left out (``?archived=true``: those only); the grant needs one of the
  scopes HubSpot takes for it: the object's read scope
  (``crm.objects.<type>.read``; tickets: ``tickets``) or
  ``crm.schemas.<type>.read``, else 403 ``MISSING_SCOPES``. Records hold the portal's properties as HubSpot's: a
  read or search answers the properties asked for (unknown names left out,
  unset ones null), none other; writes take them (a read-only one, or an
  option not the property's, refused) and refuse names the portal does not
  have (``PROPERTY_DOESNT_EXIST``).
- A URL longer than ``url_limit`` characters (HubSpot's load balancer takes
  about 16,000) is refused, 414.
- Rate limits per portal: ``ten_secondly`` (HubSpot's 110 calls in 10 s for
  OAuth apps) answered in ``X-HubSpot-RateLimit-Max``, ``-Remaining`` and
  ``-Interval-Milliseconds``; the search endpoints' ``search_per_second``
  (5), whose answers carry no such headers; 429s with HubSpot's bodies
  (``policyName`` ``TEN_SECONDLY_ROLLING``, ``SECONDLY``, ``DAILY``) and no
  ``Retry-After``.
- Webhook deliveries (:func:`signed_delivery`): a JSON array of events, signed
  v3 (``X-HubSpot-Signature-v3`` with ``X-HubSpot-Request-Timestamp``) and v1.

Knobs on ``app.state``: ``consenting_portal``; ``refuse_next`` (the next so
many CRM calls are refused as over the ten-secondly limit, as when other apps
of the portal used it up); ``daily_exhausted`` (every CRM call answers the
daily limit's 429); ``withheld_scopes`` (scopes the consent does not grant,
as a grant made before the app asked for them). Counters: ``calls`` (method and path of each CRM call
with a valid token), ``refreshes``, ``throttled`` (429s by policy).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from hub.testing.fakes import WindowLimit

PORTAL_ID = 62515
OTHER_PORTAL_ID = 7441822
APP_ID = 1160452
CLIENT_ID = "4f7c3a1e-hub-test-client"
CLIENT_SECRET = "hubspot-test-client-secret"
#: A private app's static token of the portal PORTAL_ID (it never expires).
PRIVATE_APP_TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
TIME_ZONE = "US/Eastern"
SCOPES = {"oauth", "tickets", "crm.objects.contacts.read", "crm.objects.contacts.write",
          "crm.objects.companies.read", "crm.objects.companies.write", "crm.objects.deals.read",
          "crm.objects.deals.write", "crm.schemas.contacts.read", "crm.schemas.companies.read",
          "crm.schemas.deals.read"}
#: The longest search body HubSpot takes: "If the body of your request exceeds 3,000 characters,
#: a 400 error will be returned."
SEARCH_BODY_MAX = 3_000
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
LIMIT_HEADERS = ("X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining",
                 "X-HubSpot-RateLimit-Interval-Milliseconds")


@dataclass(frozen=True)
class ObjectType:
    modified: str
    writable: tuple[str, ...]
    defaults: tuple[str, ...]
    required: tuple[str, ...] = ()
    first_id: int = 1


OBJECTS = {
    "contacts": ObjectType(
        "lastmodifieddate",
        ("email", "firstname", "lastname", "phone", "mobilephone", "company", "jobtitle", "website", "address",
         "city", "state", "zip", "country", "lifecyclestage", "hs_lead_status", "hubspot_owner_id", "fax"),
        ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"), first_id=51),
    "companies": ObjectType(
        "hs_lastmodifieddate",
        ("name", "domain", "phone", "industry", "website", "address", "city", "state", "zip", "country",
         "description", "numberofemployees", "annualrevenue", "lifecyclestage", "hubspot_owner_id"),
        ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"), first_id=5_000_001),
    "deals": ObjectType(
        "hs_lastmodifieddate",
        ("dealname", "amount", "dealstage", "pipeline", "closedate", "dealtype", "description", "hubspot_owner_id"),
        ("amount", "closedate", "createdate", "dealname", "dealstage", "hs_lastmodifieddate", "hs_object_id",
         "pipeline"), required=("dealname", "dealstage"), first_id=9_100_001),
    "tickets": ObjectType(
        "hs_lastmodifieddate",
        ("subject", "content", "hs_pipeline", "hs_pipeline_stage", "hs_ticket_priority", "hs_ticket_category",
         "hubspot_owner_id"),
        ("content", "createdate", "hs_lastmodifieddate", "hs_object_id", "hs_pipeline", "hs_pipeline_stage",
         "hs_ticket_category", "hs_ticket_priority", "subject"),
        required=("subject", "hs_pipeline", "hs_pipeline_stage"), first_id=1_700_001),
}
READ_ONLY = ("createdate", "hs_object_id", "lastmodifieddate", "hs_lastmodifieddate")
DATES = {"createdate", "lastmodifieddate", "hs_lastmodifieddate", "closedate"}
NUMBERS = {"hs_object_id", "amount", "numberofemployees", "annualrevenue"}
#: The scopes reading an object's properties takes, any one of them ("Scope requirements").
SCHEMA_SCOPES = {"contacts": {"crm.schemas.contacts.read", "crm.objects.contacts.read"},
                 "companies": {"crm.schemas.companies.read", "crm.objects.companies.read"},
                 "deals": {"crm.schemas.deals.read", "crm.objects.deals.read"}, "tickets": {"tickets"}}
FIELD_TYPES = {"string": "text", "number": "number", "date": "date", "datetime": "date",
               "enumeration": "select", "bool": "booleancheckbox"}
PROPERTY_CREATED = "2019-08-06T02:41:08.029Z"


def property_definition(name: str, type_: str = "string", *, hubspot_defined: bool = False,
                        read_only: bool = False, options: tuple[str, ...] = (), label: str | None = None,
                        archived: bool = False, data_sensitivity: str = "non_sensitive") -> dict[str, Any]:
    """A property as the properties API answers it (a portal's own carry no
    ``hubspotDefined``; a Sensitive Data one, ``data_sensitivity`` ``sensitive``
    or ``highly_sensitive``, is listed without the sensitive scopes its values take)."""
    definition: dict[str, Any] = {
        "updatedAt": PROPERTY_CREATED, "createdAt": PROPERTY_CREATED, "name": name,
        "label": label or name.replace("_", " ").capitalize(), "type": type_,
        "fieldType": FIELD_TYPES.get(type_, "text"), "description": "",
        "groupName": "hubspot_defined" if hubspot_defined else "custom_properties",
        "options": [{"label": o, "value": o, "displayOrder": i, "hidden": False} for i, o in enumerate(options)],
        "displayOrder": -1, "calculated": False, "externalOptions": False, "hasUniqueValue": False,
        "hidden": False, "modificationMetadata": {"archivable": not hubspot_defined,
                                                  "readOnlyDefinition": hubspot_defined,
                                                  "readOnlyValue": read_only},
        "formField": not read_only, "archived": archived, "dataSensitivity": data_sensitivity}
    if hubspot_defined:
        definition["hubspotDefined"] = True
    if archived:
        definition["archivedAt"] = PROPERTY_CREATED
    return definition


#: Some of the hundreds of others HubSpot defines (a real portal lists them all, ``hubspotDefined``):
#: a contact's original source (an option HubSpot sets from its analytics, which a user may
#: change) and counts HubSpot keeps, which no one writes.
ANALYTICS_SOURCES = ("ORGANIC_SEARCH", "PAID_SEARCH", "EMAIL_MARKETING", "SOCIAL_MEDIA", "REFERRALS",
                     "OTHER_CAMPAIGNS", "DIRECT_TRAFFIC", "OFFLINE", "PAID_SOCIAL")
MORE_DEFINED = {
    "contacts": (property_definition("hs_analytics_source", "enumeration", hubspot_defined=True,
                                     options=ANALYTICS_SOURCES, label="Original Source"),
                 property_definition("hs_analytics_num_page_views", "number", hubspot_defined=True, read_only=True,
                                     label="Number of Pageviews")),
    "companies": (property_definition("num_associated_contacts", "number", hubspot_defined=True, read_only=True,
                                      label="Number of Associated Contacts"),),
    "deals": (property_definition("hs_deal_stage_probability", "number", hubspot_defined=True, read_only=True,
                                  label="Deal probability"),),
    "tickets": (property_definition("hs_num_times_contacted", "number", hubspot_defined=True, read_only=True,
                                    label="Number of times contacted"),),
}


def standard_properties(object_type: str) -> dict[str, dict[str, Any]]:
    """HubSpot's own properties of an object type."""
    obj = OBJECTS[object_type]
    own = ("createdate", "hs_object_id", obj.modified)
    defined = {name: property_definition(name, "datetime" if name in DATES else "number" if name in NUMBERS
                                         else "string", hubspot_defined=True, read_only=name in own)
               for name in dict.fromkeys([*obj.writable, *own])}
    return defined | {p["name"]: dict(p) for p in MORE_DEFINED[object_type]}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def error(status: int, message: str, category: str | None = None, headers: dict[str, str] | None = None,
          **extra: Any) -> JSONResponse:
    """HubSpot's error body: ``{status, message, correlationId, category, ...}``."""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), **extra}
    if category:
        body["category"] = category
    return JSONResponse(body, status_code=status, headers=headers)


def not_found(record_id: str) -> JSONResponse:
    return error(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND",
                 context={"id": [record_id]})


def invalid_properties(problems: list[tuple[str, str, str]]) -> JSONResponse:
    """A property validation refusal: HubSpot embeds its list in the message."""
    listed = [{"isValid": False, "message": message, "error": code, "name": name,
               "localizedErrorMessage": message} for name, code, message in problems]
    return error(400, "Property values were not valid: " + json.dumps(listed), "VALIDATION_ERROR")


@dataclass
class Portal:
    """A HubSpot account: its records and its limits."""

    id: int
    time_zone: str
    ten_secondly: WindowLimit
    search: WindowLimit
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {t: {} for t in OBJECTS})
    next_ids: dict[str, int] = field(default_factory=lambda: {t: o.first_id for t, o in OBJECTS.items()})
    #: Per object type, its properties by name: HubSpot's own, then the portal's (:func:`add_property`).
    properties: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {t: standard_properties(t) for t in OBJECTS})
    daily_exhausted: bool = False
    last_ms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stamp(self) -> int:
        """Now in epoch milliseconds, later than any stamp given before."""
        with self.lock:
            self.last_ms = max(self.last_ms + 1, int(time.time() * 1000))
            return self.last_ms

    def insert(self, object_type: str, properties: dict[str, str | None], ms: int | None = None) -> dict[str, Any]:
        with self.lock:
            record_id = str(self.next_ids[object_type])
            self.next_ids[object_type] += 1
        ms = self.stamp() if ms is None else ms
        obj = OBJECTS[object_type]
        row = {"id": record_id, "properties": {**properties, "createdate": iso(ms), "hs_object_id": record_id,
                                               obj.modified: iso(ms)},
               "createdAt": iso(ms), "updatedAt": iso(ms), "archived": False}
        if object_type == "deals":
            row["properties"].setdefault("pipeline", "default")
        self.tables[object_type][record_id] = row
        return row

    def update(self, object_type: str, row: dict[str, Any], properties: dict[str, str | None]) -> None:
        ms = self.stamp()
        row["properties"].update(properties)
        row["properties"][OBJECTS[object_type].modified] = iso(ms)
        row["updatedAt"] = iso(ms)

    def known(self, object_type: str) -> dict[str, dict[str, Any]]:
        """The object type's properties the portal has (archived ones not)."""
        return {n: p for n, p in self.properties[object_type].items() if not p["archived"]}

    def view(self, object_type: str, row: dict[str, Any], wanted: list[str] | None = None) -> dict[str, Any]:
        """A record as HubSpot answers it: the properties asked for (names the
        portal does not have left out, unset ones null), with its id, creation
        and modification; none other."""
        obj, known = OBJECTS[object_type], self.known(object_type)
        own = ("createdate", "hs_object_id", obj.modified)
        names = [n for n in (wanted or obj.defaults) if n in known]
        names = list(dict.fromkeys([*names, *own]))
        return {"id": row["id"], "properties": {n: row["properties"].get(n) for n in names},
                "createdAt": row["createdAt"], "updatedAt": row["updatedAt"], "archived": row["archived"]}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and not value.is_integer()):
        return str(value)
    if isinstance(value, float):
        return str(int(value))
    raise TypeError(value)


def create_app(*, ten_secondly: tuple[int, float] = (110, 10.0), search_per_second: int = 5,
               search_cap: int = 10_000, token_lifetime: float = 1800, time_zone: str = TIME_ZONE,
               url_limit: int = 16_000) -> FastAPI:
    app = FastAPI()
    state = app.state
    state.client_id, state.client_secret = CLIENT_ID, CLIENT_SECRET
    state.portals = {}
    state.consenting_portal = PORTAL_ID
    state.codes, state.access, state.refresh = {}, {PRIVATE_APP_TOKEN: (PORTAL_ID, math.inf)}, {}
    state.refuse_next = 0
    state.revoke_failures = 0  # answers 502 to that many revocations first
    state.calls, state.refreshes, state.unauthorized, state.throttled = [], 0, 0, collections.Counter()
    state.search_cap = search_cap
    state.url_limit = url_limit
    state.withheld_scopes = set()
    state.granted = {}  # access and refresh tokens: the scopes granted (a private app's token: all)

    def portal(portal_id: int) -> Portal:
        if portal_id not in state.portals:
            state.portals[portal_id] = Portal(portal_id, time_zone, WindowLimit(*ten_secondly),
                                              WindowLimit(search_per_second, 1.0))
        return state.portals[portal_id]

    state.portal = portal
    portal(PORTAL_ID)

    # ------------------------------------------------------------ auth and limits

    @app.middleware("http")
    async def gate(request: Request, call_next):
        path = request.url.path
        if len(str(request.url)) > state.url_limit:
            return Response("<html><body><h1>414 Request-URI Too Large</h1></body></html>", status_code=414,
                            media_type="text/html")
        if not path.startswith(("/crm/", "/account-info/")):
            return await call_next(request)
        header = request.headers.get("authorization", "")
        token = state.access.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if token is None or token[1] <= time.time():
            state.unauthorized += 1
        if token is None:
            return error(401, "Authentication credentials not found. This API supports OAuth 2.0 authentication "
                              "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
                              "oauth-overview", "INVALID_AUTHENTICATION")
        portal_id, expires = token
        if expires <= time.time():
            minutes = int((time.time() - expires) // 60)
            return error(401, f"The OAuth token used to make this call expired {minutes} minute(s) ago.",
                         "EXPIRED_AUTHENTICATION")
        account = portal(portal_id)
        request.state.portal = account
        state.calls.append((request.method, path))
        if path.endswith("/search"):
            if not account.search.hit().allowed:
                return throttled("SECONDLY", "You have reached your secondly limit.")
            return await call_next(request)
        if account.daily_exhausted:
            return throttled("DAILY", "You have reached your daily limit.", limit_headers(account))
        if state.refuse_next > 0:
            state.refuse_next -= 1
            return throttled("TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.",
                             limit_headers(account, remaining=0))
        if not account.ten_secondly.hit().allowed:
            return throttled("TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.",
                             limit_headers(account))
        response = await call_next(request)
        response.headers.update(limit_headers(account))
        return response

    def limit_headers(account: Portal, remaining: int | None = None) -> dict[str, str]:
        window = account.ten_secondly
        left = window.remaining() if remaining is None else remaining
        return dict(zip(LIMIT_HEADERS, (str(window.calls), str(left), str(int(window.seconds * 1000))), strict=True))

    def throttled(policy: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        state.throttled[policy] += 1
        body = {"status": "error", "message": message, "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()), "policyName": policy}
        return JSONResponse(body, status_code=429, headers=headers)

    # ------------------------------------------------------------ OAuth

    @app.get("/oauth/authorize")
    async def authorize(request: Request):
        query = dict(request.query_params)
        if query.get("client_id") != state.client_id:
            return error(400, "Invalid client_id", "VALIDATION_ERROR")
        scopes = set((query.get("scope") or "").split())
        if not scopes or not scopes <= SCOPES or not query.get("redirect_uri"):
            return error(400, "Invalid scope or redirect_uri", "VALIDATION_ERROR")
        code = str(uuid.uuid4())
        state.codes[code] = (query["redirect_uri"], state.consenting_portal)
        state.granted[code] = frozenset(scopes - state.withheld_scopes)
        back = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        return RedirectResponse(f"{query['redirect_uri']}?{urlencode(back)}", status_code=302)

    @app.post("/oauth/v1/token")
    async def token(request: Request):
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("client_id") != state.client_id or form.get("client_secret") != state.client_secret:
            return JSONResponse({"status": "BAD_CLIENT_ID", "message": "missing or invalid client_id or client_secret",
                                 "correlationId": str(uuid.uuid4())}, status_code=400)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            found = state.codes.pop(form.get("code", ""), None)
            if found is None:
                return JSONResponse({"status": "BAD_AUTH_CODE", "message": "missing or unknown auth code",
                                     "correlationId": str(uuid.uuid4())}, status_code=400)
            redirect_uri, portal_id = found
            if form.get("redirect_uri") != redirect_uri:
                return JSONResponse({"status": "MISMATCH_REDIRECT_URI_AUTH_CODE",
                                     "message": "redirect_uri does not match initial auth code URL",
                                     "correlationId": str(uuid.uuid4())}, status_code=400)
            refresh_token = str(uuid.uuid4())
            state.refresh[refresh_token] = portal_id
            state.granted[refresh_token] = state.granted.pop(form.get("code", ""), frozenset(SCOPES))
        elif grant == "refresh_token":
            refresh_token = form.get("refresh_token", "")
            portal_id = state.refresh.get(refresh_token)
            if portal_id is None:
                return JSONResponse({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token",
                                     "correlationId": str(uuid.uuid4())}, status_code=400)
            state.refreshes += 1
        else:
            return JSONResponse({"status": "BAD_GRANT_TYPE", "message": "unsupported grant_type",
                                 "correlationId": str(uuid.uuid4())}, status_code=400)
        access = "CN" + secrets.token_urlsafe(24)
        state.access[access] = (portal_id, time.time() + token_lifetime)
        state.granted[access] = state.granted.get(refresh_token, frozenset(SCOPES))
        return {"token_type": "bearer", "refresh_token": refresh_token, "access_token": access,
                "expires_in": token_lifetime}

    @app.delete("/oauth/v1/refresh-tokens/{refresh_token}")
    async def revoke(refresh_token: str):
        """The grant given back: its refresh token no longer refreshes (204; an unknown one, 404)."""
        if state.revoke_failures > 0:
            state.revoke_failures -= 1
            return JSONResponse({"status": "error", "message": "internal error", "category": "INTERNAL_ERROR",
                                 "correlationId": str(uuid.uuid4())}, status_code=502)
        if state.refresh.pop(refresh_token, None) is None:
            return JSONResponse({"status": "error", "message": "refresh token not found", "category":
                                 "OBJECT_NOT_FOUND", "correlationId": str(uuid.uuid4())}, status_code=404)
        return Response(status_code=204)

    @app.get("/account-info/v3/details")
    async def account_details(request: Request):
        account: Portal = request.state.portal
        offset = datetime.now(ZoneInfo(account.time_zone)).utcoffset()
        offset_ms = int(offset.total_seconds() * 1000) if offset else 0
        sign, minutes = ("-" if offset_ms < 0 else "+"), abs(offset_ms) // 60000
        return {"portalId": account.id, "accountType": "STANDARD", "timeZone": account.time_zone,
                "companyCurrency": "USD", "additionalCurrencies": [], "utcOffset": f"{sign}{minutes // 60:02d}:"
                f"{minutes % 60:02d}", "utcOffsetMilliseconds": offset_ms, "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1"}

    # ------------------------------------------------------------ objects

    def table(request: Request, object_type: str) -> dict[str, dict[str, Any]] | None:
        return request.state.portal.tables.get(object_type)

    def unknown_type(object_type: str) -> JSONResponse:
        return error(400, f"Unable to infer object type from: {object_type}", "VALIDATION_ERROR")

    def wanted(request: Request) -> list[str] | None:
        names = [n.strip() for v in request.query_params.getlist("properties") for n in v.split(",") if n.strip()]
        return names or None

    @app.get("/crm/v3/objects/{object_type}")
    async def list_(request: Request, object_type: str):
        rows = table(request, object_type)
        if rows is None:
            return unknown_type(object_type)
        query = request.query_params
        try:
            limit = int(query.get("limit", "10"))
            after = int(query["after"]) if "after" in query else 0
        except ValueError:
            return error(400, "Invalid input: limit and after must be integers", "VALIDATION_ERROR")
        if not 1 <= limit <= 100:
            return error(400, "limit must be between 1 and 100", "VALIDATION_ERROR")
        ordered = [r for r in sorted(rows.values(), key=lambda r: int(r["id"])) if int(r["id"]) >= after]
        body: dict[str, Any] = {"results": [request.state.portal.view(object_type, r, wanted(request))
                                            for r in ordered[:limit]]}
        if len(ordered) > limit:
            following = ordered[limit]["id"]
            link = f"https://api.hubapi.com/crm/v3/objects/{object_type}?{urlencode({**query, 'after': following})}"
            body["paging"] = {"next": {"after": following, "link": link}}
        return body

    @app.get("/crm/v3/objects/{object_type}/{record_id}")
    async def get(request: Request, object_type: str, record_id: str):
        rows = table(request, object_type)
        if rows is None:
            return unknown_type(object_type)
        row = rows.get(record_id)
        return request.state.portal.view(object_type, row, wanted(request)) if row else not_found(record_id)

    async def properties_of(request: Request, object_type: str, row: dict[str, Any] | None
                            ) -> dict[str, str | None] | JSONResponse:
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            return error(400, "Invalid input JSON on line 1, column 1: Cannot build SimplePublicObjectInput",
                         "VALIDATION_ERROR")
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict):
            return error(400, "Invalid input JSON: properties must be an object", "VALIDATION_ERROR")
        obj, known = OBJECTS[object_type], request.state.portal.known(object_type)
        problems, values = [], {}
        for name, value in properties.items():
            definition = known.get(name)
            if definition is None:
                problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
            elif definition["modificationMetadata"]["readOnlyValue"] or definition["calculated"]:
                problems.append((name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be '
                                                          f'set.'))
            else:
                try:
                    values[name] = _text(value)
                except TypeError:
                    problems.append((name, "INVALID_OPTION", f"{json.dumps(value)} is not a valid value for {name}"))
                    continue
                allowed = [o["value"] for o in definition["options"]]
                if allowed and values[name] not in (None, "", *allowed):
                    problems.append((name, "INVALID_OPTION", f"{values[name]} was not one of the allowed options: "
                                                             f"[{', '.join(allowed)}]"))
        email = values.get("email")
        if email and not EMAIL.fullmatch(email):
            problems.append(("email", "INVALID_EMAIL", f"Email address {email} is invalid"))
        if problems:
            return invalid_properties(problems)
        if row is None:
            missing = [n for n in obj.required if not values.get(n)]
            if missing:
                return error(400, f"Missing required properties: {', '.join(missing)}", "VALIDATION_ERROR",
                             errors=[{"message": f'Property "{n}" is required', "code": "REQUIRED_PROPERTY",
                                      "context": {"propertyName": [n]}} for n in missing])
        if email:
            taken = next((r for r in request.state.portal.tables["contacts"].values()
                          if r is not row and (r["properties"].get("email") or "").lower() == email.lower()), None)
            if taken:
                return error(409, f"Contact already exists. Existing ID: {taken['id']}", "CONFLICT")
        return values

    def written(request: Request, object_type: str, row: dict[str, Any], names: list[str]) -> dict[str, Any]:
        """What HubSpot answers a write: the properties written and a few of its own, not the whole record."""
        return request.state.portal.view(object_type, row,
                                         [*names, "createdate", "hs_object_id", OBJECTS[object_type].modified])

    @app.post("/crm/v3/objects/{object_type}")
    async def create(request: Request, object_type: str):
        if object_type not in OBJECTS:
            return unknown_type(object_type)
        values = await properties_of(request, object_type, None)
        if isinstance(values, Response):
            return values
        row = request.state.portal.insert(object_type, values)
        return JSONResponse(written(request, object_type, row, list(values)), status_code=201)

    @app.patch("/crm/v3/objects/{object_type}/{record_id}")
    async def update(request: Request, object_type: str, record_id: str):
        rows = table(request, object_type)
        if rows is None:
            return unknown_type(object_type)
        row = rows.get(record_id)
        if row is None:
            return not_found(record_id)
        values = await properties_of(request, object_type, row)
        if isinstance(values, Response):
            return values
        request.state.portal.update(object_type, row, values)
        return written(request, object_type, row, list(values))

    @app.delete("/crm/v3/objects/{object_type}/{record_id}")
    async def archive(request: Request, object_type: str, record_id: str):
        rows = table(request, object_type)
        if rows is None:
            return unknown_type(object_type)
        rows.pop(record_id, None)
        return Response(status_code=204)

    # ------------------------------------------------------------ batch read and properties

    @app.post("/crm/v3/objects/{object_type}/batch/read")
    async def batch_read(request: Request, object_type: str):
        rows = table(request, object_type)
        if rows is None:
            return unknown_type(object_type)
        try:
            body = json.loads(await request.body())
            ids = [str(i["id"]) for i in body["inputs"]]
            names = body.get("properties") or None
            if names is not None and not all(isinstance(n, str) for n in names):
                raise TypeError(names)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return error(400, "Invalid input JSON: Cannot build BatchReadInputSimplePublicObjectId",
                         "VALIDATION_ERROR")
        if len(ids) > 100:
            return error(400, "Batch input limit exceeded: at most 100 inputs", "VALIDATION_ERROR")
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        answer: dict[str, Any] = {"status": "COMPLETE", "results": [
            request.state.portal.view(object_type, rows[i], names) for i in dict.fromkeys(ids) if i in rows],
            "startedAt": now, "completedAt": now}
        missing = [i for i in dict.fromkeys(ids) if i not in rows]
        if not missing:
            return answer
        singular = object_type.rstrip("s").upper().replace("COMPANIE", "COMPANY")
        answer |= {"numErrors": 1, "errors": [{
            "status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": missing},
            "message": f"Could not get some {singular} objects, they may be deleted or not exist. Check that ids "
                       f"are valid."}]}
        return JSONResponse(answer, status_code=207)

    @app.get("/crm/v3/properties/{object_type}")
    async def properties(request: Request, object_type: str):
        if object_type not in OBJECTS:
            return unknown_type(object_type)
        granted = state.granted.get(request.headers["authorization"].removeprefix("Bearer "), SCOPES)
        if not SCHEMA_SCOPES[object_type] & set(granted):
            return error(403, "This app hasn't been granted all required scopes to make this call. Read more about "
                              "required scopes here: https://developers.hubspot.com/scopes.", "MISSING_SCOPES",
                         errors=[{"message": "One or more of the following scopes are required.",
                                  "context": {"requiredGranularScopes": sorted(SCHEMA_SCOPES[object_type])}}])
        archived = request.query_params.get("archived") == "true"
        every = request.state.portal.properties[object_type].values()
        return {"results": [p for p in every if p["archived"] == archived]}

    # ------------------------------------------------------------ search

    @app.post("/crm/v3/objects/{object_type}/search")
    async def search(request: Request, object_type: str):
        rows = table(request, object_type)
        if rows is None:
            return unknown_type(object_type)
        raw = await request.body()
        if len(raw) > SEARCH_BODY_MAX:
            return error(400, f"The request body is {len(raw)} characters long: a search takes at most "
                              f"{SEARCH_BODY_MAX}", "VALIDATION_ERROR")
        try:
            body = json.loads(raw)
            groups = body.get("filterGroups") or []
            sorts = body.get("sorts") or []
            limit = int(body.get("limit", 10))
            after = int(body.get("after") or 0)
            if len(sorts) > 1:
                raise ValueError("only one sort")
            matched = [r for r in rows.values() if not groups or any(
                all(_matches(r, f) for f in group.get("filters") or []) for group in groups)]
        except (ValueError, TypeError, AttributeError, KeyError):
            return error(400, "There was a problem with the request.", "VALIDATION_ERROR")
        if not 1 <= limit <= 200:
            return error(400, "limit must be between 1 and 200", "VALIDATION_ERROR")
        if after >= state.search_cap:
            return error(400, f"There was a problem with the request. Cannot page past {state.search_cap} results.",
                         "VALIDATION_ERROR")
        if sorts:
            name, descending = sorts[0].get("propertyName"), sorts[0].get("direction") == "DESCENDING"
            matched.sort(key=lambda r: (_comparable(name, r["properties"].get(name)) is None,
                                        _comparable(name, r["properties"].get(name)) or 0), reverse=descending)
        else:
            matched.sort(key=lambda r: int(r["id"]))
        page = matched[after:min(after + limit, state.search_cap)]
        answer: dict[str, Any] = {"total": len(matched), "results": [
            request.state.portal.view(object_type, r, body.get("properties") or None) for r in page]}
        if len(matched) > after + limit:
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return answer

    return app


def _comparable(name: str, value: Any) -> Any:
    """A property value as search compares it: dates and numbers as numbers, the rest as text."""
    if value is None or value == "":
        return None
    text = str(value)
    if name in DATES:
        if text.isdigit():
            return int(text)
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    if name in NUMBERS:
        return float(text)
    return text.lower()


def _matches(row: dict[str, Any], condition: dict[str, Any]) -> bool:
    name, operator = condition["propertyName"], condition["operator"]
    have = _comparable(name, row["properties"].get(name))
    if operator == "HAS_PROPERTY":
        return have is not None
    if operator == "NOT_HAS_PROPERTY":
        return have is None
    if operator == "IN":
        return have in [_comparable(name, v) for v in condition["values"]]
    want = _comparable(name, condition["value"])
    if operator == "EQ":
        return have == want
    if operator == "NEQ":
        return have != want
    if have is None:
        return False
    compare = {"LT": have < want, "LTE": have <= want, "GT": have > want, "GTE": have >= want}
    if operator not in compare:
        raise ValueError(operator)
    return compare[operator]


# ---------------------------------------------------------------- helpers for tests


SEEDS = {
    "contacts": lambda n: {"email": f"seed{n}.{uuid.uuid4().hex[:6]}@example.com", "firstname": f"Seed{n}",
                           "lastname": "Contact"},
    "companies": lambda n: {"name": f"Seed company {n}", "domain": f"seed{n}.example.com"},
    "deals": lambda n: {"dealname": f"Seed deal {n}", "dealstage": "appointmentscheduled", "amount": str(100 * n)},
    "tickets": lambda n: {"subject": f"Seed ticket {n}", "hs_pipeline": "0", "hs_pipeline_stage": "1"},
}


def seed(app: FastAPI, entity: str, count: int, portal: int = PORTAL_ID, ago: float = 0) -> list[str] | None:
    """Create ``count`` records of ``entity`` in the portal, last changed ``ago``
    seconds ago (a millisecond apart) or now; their ids."""
    if entity not in OBJECTS:
        return None
    account = app.state.portal(portal)
    start = len(account.tables[entity])
    then = int((time.time() - ago) * 1000)
    return [account.insert(entity, SEEDS[entity](start + i + 1), ms=then + i if ago else None)["id"]
            for i in range(count)]


def add_property(app: FastAPI, entity: str, name: str, type_: str = "string", portal: int = PORTAL_ID,
                 **options: Any) -> dict[str, Any]:
    """The portal's own property ``name`` of ``entity`` (as its admins add
    them in HubSpot's settings); ``options``: :func:`property_definition`'s."""
    definition = property_definition(name, type_, **options)
    app.state.portal(portal).properties[entity][name] = definition
    return definition


def touch(app: FastAPI, entity: str, record_id: str, portal: int = PORTAL_ID, **properties: str) -> None:
    """Change a record in HubSpot (as its users would): its modification time moves on."""
    account = app.state.portal(portal)
    account.update(entity, account.tables[entity][record_id], properties)


def expire_tokens(app: FastAPI) -> None:
    """Every access token the fake issued stops working (its refresh tokens still do)."""
    app.state.access = {token: (portal, 0.0) for token, (portal, _) in app.state.access.items()}


# ---------------------------------------------------------------- webhooks


def _signed_uri(uri: str) -> str:
    """The URI as HubSpot signs it: these escapes decoded."""
    for escaped, char in (("%3A", ":"), ("%2F", "/"), ("%3F", "?"), ("%40", "@"), ("%21", "!"), ("%24", "$"),
                          ("%27", "'"), ("%28", "("), ("%29", ")"), ("%2A", "*"), ("%2C", ","), ("%3B", ";")):
        uri = uri.replace(escaped, char).replace(escaped.lower(), char)
    return uri


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    message = method.encode() + _signed_uri(uri).encode() + body + str(timestamp_ms).encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def sign_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def webhook_event(subscription_type: str, object_id: int | str, portal: int = PORTAL_ID, **extra: Any
                  ) -> dict[str, Any]:
    """One event as HubSpot delivers it, with a new ``eventId``."""
    event = {"eventId": 100_000_000 + secrets.randbelow(4_000_000_000), "subscriptionId": 2_451_001,
             "portalId": portal, "appId": APP_ID, "occurredAt": int(time.time() * 1000),
             "subscriptionType": subscription_type, "attemptNumber": 0,
             "objectId": int(object_id), "changeSource": "CRM", "changeFlag": "NEW"}
    if subscription_type.endswith(".propertyChange"):
        event.pop("changeFlag")
    return {**event, **extra}


def signed_delivery(url: str, events: list[dict[str, Any]], *, secret: str = CLIENT_SECRET,
                    versions: tuple[str, ...] = ("v1", "v3"), timestamp_ms: int | None = None,
                    method: str = "POST") -> tuple[dict[str, str], bytes]:
    """A delivery to ``url`` as HubSpot sends it: ``(headers, body)``, signed
    with the app's client secret in each of ``versions``."""
    body = json.dumps(events).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)"}
    if "v1" in versions:
        headers |= {"X-HubSpot-Signature": sign_v1(secret, body), "X-HubSpot-Signature-Version": "v1"}
    if "v3" in versions:
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        headers |= {"X-HubSpot-Signature-v3": sign_v3(secret, method, url, body, stamp),
                    "X-HubSpot-Request-Timestamp": str(stamp)}
    return headers, body


def conformance_webhook(harness: Any, kind: str) -> tuple[dict[str, str], bytes]:
    """A delivery for the conformance suite (signed v3 only: v1 signs no time);
    ``stale`` was signed ten minutes ago."""
    portal = int(harness.connection["provider_account"])
    stamp = int(time.time() * 1000) - (600_000 if kind == "stale" else 0)
    events = [webhook_event("contact.propertyChange", 51, portal, propertyName="firstname", propertyValue="Ada")]
    return signed_delivery(harness.delivery_url, events, secret=harness.fake_app.state.client_secret,
                           versions=("v3",), timestamp_ms=stamp)
