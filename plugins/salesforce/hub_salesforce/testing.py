"""A fake Salesforce for tests, served over real HTTP.

It behaves like Salesforce where the plugin depends on it:

- OAuth 2 web-server flow with PKCE on a login host
  (``/services/oauth2/authorize`` approves at once and redirects back with a
  single-use code; ``POST /services/oauth2/token`` takes the form grants).
  The login host decides the org: a code issued by a host listed in
  ``app.state.sandbox_logins`` (test.salesforce.com) is the sandbox org's, and
  is redeemed there only. The token answer has ``access_token``,
  ``refresh_token`` (not on a refresh), ``instance_url`` (the org's host: by
  default the origin the token request came to), ``id`` (the identity URL
  ending ``/<orgId>/<userId>``), ``issued_at``, ``signature`` (base64
  HMAC-SHA256 of id and issued_at keyed with the client secret) and no
  ``expires_in``: a session ends silently after ``session_lifetime``, and
  calls then get 401 ``INVALID_SESSION_ID``.
- The REST API under ``/services/data/vXX.X/``: SOQL queries (the subset the
  plugin sends: fields, ``FROM``, one ``SystemModstamp``/``LastModifiedDate``
  comparison, ``ORDER BY``, ``LIMIT``; and the ``Organization``) answered in
  batches (``Sforce-Query-Options: batchSize=``, 200 to 2,000, capped by
  ``max_batch``) with query locators (``nextRecordsUrl``) that expire;
  sObject records (get with ``fields``, create 201 ``{id, success, errors}``,
  update and delete 204); the delete log (``/sobjects/<type>/deleted/``, 15
  days); error arrays ``[{"message", "errorCode", "fields"}]``. A SOQL
  statement is 100,000 characters at most (400 ``MALFORMED_QUERY``).
- Salesforce's request size: a URL over 16,384 bytes is answered 414, a URL
  and headers together over it 431 (plain text, before the session is looked at).
- ``POST /services/data/vXX.X/composite``: up to 25 subrequests
  ``{method, url, referenceId, httpHeaders?, body?}`` (checked: a malformed
  one, or an ``Accept``/``Authorization``/``Content-Type`` header in it, fails
  the whole call with a 400), answered within a 200 as ``{"compositeResponse":
  [{body, httpHeaders, httpStatusCode, referenceId}]}``; the query resource is
  served in them (its errors as the subrequest's status and error array),
  ``allOrNone`` rolls the others back (``PROCESSING_HALTED``). The whole call
  counts as one against the allocation, and its subrequests run in its
  session: an ended session or the allocation used up refuses the call as a
  whole (401, 403), never a subrequest.
- Salesforce's own failures: ``failing_queries`` makes the next so many
  queries (in a URL or a subrequest) answer 500 ``UNKNOWN_EXCEPTION``, as an
  internal error of Salesforce's does.
- The org's API allocation: every answer carries ``Sforce-Limit-Info:
  api-usage=used/limit``; a call over it gets 403 ``REQUEST_LIMIT_EXCEEDED``
  (``TotalRequests``); ``Org.concurrency_refusals`` refuses the next calls with
  the same code for the org's long requests at once (``ConcurrentPerOrgLongTxn``).

Knobs: ``app.state.orgs[ORG_ID]`` (its ``api_used``, ``api_limit``,
``instance``: set it to move the org, and the next token answer names it),
``sandbox_logins``, ``max_batch`` (Salesforce answers smaller batches than
asked now and then), ``refuse_locators`` (the next so many locators asked for
are found expired), ``failing_queries``. Helpers: :func:`seed`, :func:`touch`,
:func:`expire_tokens`, :func:`expire_locators`. Counters: ``calls`` (origin,
method, path of each API call with a valid session), ``refreshes``,
``batch_sizes`` (the batch each query or locator asked for), ``subrequests``
(method and URL of each composite subrequest).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

CLIENT_ID = "3MVG9sfdcHubTestConsumerKey0001"
CLIENT_SECRET = "sfdc-test-consumer-secret-0001"
ORG_ID = "00D5g000004ZxYkEAK"
SANDBOX_ORG_ID = "00D7x000001SbXqEAK"
USER_ID = "0055g00000DnUoIAAV"
API_VERSION = "v62.0"
SCOPES = {"api", "refresh_token", "offline_access", "id", "full"}
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
BASE62_CHECK = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def errors(code: str, message: str, fields: list[str] | None = None, **extra: Any) -> list[dict[str, Any]]:
    """Salesforce's error body: an array of ``{message, errorCode, fields}``."""
    return [{"message": message, "errorCode": code, "fields": fields or [], **extra}]


def error(status: int, code: str, message: str, fields: list[str] | None = None,
          **extra: Any) -> JSONResponse:
    return JSONResponse(errors(code, message, fields, **extra), status_code=status)


def oauth_error(code: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


def stamp(moment: float) -> str:
    """A Salesforce datetime: to the second, ``.000+0000``."""
    return datetime.fromtimestamp(int(moment), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def salesforce_id(prefix: str, number: int) -> str:
    """An 18-character id: 15 case-sensitive characters and their case checksum."""
    base = f"{prefix}5g00000{number:05d}"
    suffix = "".join(BASE62_CHECK[sum(1 << j for j, c in enumerate(base[i:i + 5]) if c.isupper())]
                     for i in range(0, 15, 5))
    return base + suffix


@dataclass(frozen=True)
class SObject:
    prefix: str
    writable: tuple[str, ...]
    required: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()
    numbers: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    unique_email: bool = False


def _address(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{part}" for part in ("Street", "City", "State", "PostalCode", "Country"))


AUDIT = ("Id", "IsDeleted", "CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById", "SystemModstamp",
         "LastViewedDate", "LastReferencedDate")
SOBJECTS = {
    "Account": SObject("001", ("Name", "AccountNumber", "Type", "Industry", "Phone", "Fax", "Website",
                               "Description", "NumberOfEmployees", "AnnualRevenue", *_address("Billing"),
                               *_address("Shipping"), "ParentId", "OwnerId"),
                       required=("Name",), numbers=("NumberOfEmployees", "AnnualRevenue")),
    "Contact": SObject("003", ("Salutation", "FirstName", "LastName", "Email", "Phone", "MobilePhone", "Title",
                               "Department", "AccountId", *_address("Mailing"), "LeadSource", "Birthdate",
                               "Description", "OwnerId"),
                       required=("LastName",), dates=("Birthdate",), unique_email=True),
    "Lead": SObject("00Q", ("Salutation", "FirstName", "LastName", "Company", "Title", "Email", "Phone",
                            "MobilePhone", "Website", "Status", "LeadSource", "Industry", "Rating",
                            "NumberOfEmployees", "AnnualRevenue", "Street", "City", "State", "PostalCode",
                            "Country", "Description", "OwnerId"),
                    required=("LastName", "Company"), readonly=("IsConverted",),
                    defaults=(("Status", "Open - Not Contacted"), ("IsConverted", False)),
                    numbers=("NumberOfEmployees", "AnnualRevenue"), unique_email=True),
    "Opportunity": SObject("006", ("Name", "AccountId", "StageName", "CloseDate", "Amount", "Probability", "Type",
                                   "LeadSource", "NextStep", "Description", "ForecastCategoryName", "OwnerId"),
                           required=("Name", "StageName", "CloseDate"), readonly=("IsClosed", "IsWon"),
                           defaults=(("ForecastCategoryName", "Pipeline"),), numbers=("Amount", "Probability"),
                           dates=("CloseDate",)),
}
#: The batch a query answers when Sforce-Query-Options does not say.
MAX_DEFAULT = 2000
#: The longest URL, and URL and headers together, Salesforce takes (bytes): 414 and 431 beyond.
MAX_REQUEST_HEAD = 16_384
#: The longest SOQL statement Salesforce runs (characters, its default).
MAX_SOQL = 100_000
#: Subrequests in one composite call, at most.
MAX_SUBREQUESTS = 25
REFERENCE_ID = re.compile(r"[A-Za-z0-9_]+")
#: The query resource a composite subrequest may name: a query (``/query/?q=``) or a locator's batch.
SUBREQUEST_QUERY = re.compile(r"/services/data/(?P<version>v[0-9]+\.[0-9])/query/?(?P<locator>[0-9A-Za-z]+-[0-9]+)?")
ENTITIES = {"accounts": "Account", "contacts": "Contact", "leads": "Lead", "opportunities": "Opportunity"}


def _fields(sobject: str) -> set[str]:
    kind = SOBJECTS[sobject]
    return {*AUDIT, *kind.writable, *kind.readonly}


@dataclass
class Org:
    """A Salesforce org: its records, delete log, allocation and instance."""

    id: str
    name: str
    sandbox: bool
    instance: str | None = None
    api_limit: int = 100_000
    api_used: int = 0
    #: Calls to refuse next as the org's long requests at once are at their limit (25 of 20 s or more).
    concurrency_refusals: int = 0
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {t: {} for t in SOBJECTS})
    deleted: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: {t: [] for t in SOBJECTS})
    #: The org's own (custom) fields of each sObject, with their describe type (``string``, ``double``).
    custom: dict[str, dict[str, str]] = field(default_factory=lambda: {t: {} for t in SOBJECTS})
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fields(self, sobject: str) -> set[str]:
        """The sObject's fields in this org: the standard ones and its own."""
        return _fields(sobject) | set(self.custom[sobject])

    def numbers(self, sobject: str) -> set[str]:
        return {*SOBJECTS[sobject].numbers, *(n for n, t in self.custom[sobject].items() if t == "double")}

    def insert(self, sobject: str, values: dict[str, Any], moment: float | None = None) -> dict[str, Any]:
        kind = SOBJECTS[sobject]
        with self.lock:
            record_id = salesforce_id(kind.prefix, next(self.counter))
        when = stamp(time.time() if moment is None else moment)
        row = {name: None for name in self.fields(sobject)}
        row.update(dict(kind.defaults))
        row.update(values)
        row.update(Id=record_id, IsDeleted=False, CreatedDate=when, LastModifiedDate=when, SystemModstamp=when,
                   CreatedById=USER_ID, LastModifiedById=USER_ID, OwnerId=values.get("OwnerId") or USER_ID)
        _derive(sobject, row)
        self.tables[sobject][record_id] = row
        return row

    def update(self, sobject: str, row: dict[str, Any], values: dict[str, Any]) -> None:
        row.update(values)
        when = stamp(time.time())
        row.update(LastModifiedDate=when, SystemModstamp=when)
        _derive(sobject, row)

    def delete(self, sobject: str, record_id: str) -> None:
        self.tables[sobject].pop(record_id)
        self.deleted[sobject].append((record_id, time.time()))


def _derive(sobject: str, row: dict[str, Any]) -> None:
    if sobject == "Opportunity":
        stage = str(row.get("StageName") or "")
        row["IsClosed"], row["IsWon"] = stage.startswith("Closed"), stage == "Closed Won"


@dataclass
class Locator:
    sobject: str
    records: list[dict[str, Any]]
    used: float


QUERY = re.compile(
    r"SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)"
    r"(?:\s+WHERE\s+(?P<field>SystemModstamp|LastModifiedDate)\s*(?P<op>>=|<=|>|<|=)\s*(?P<time>[0-9T:.+\-Z]+))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>\w+(?:\s*,\s*\w+)*))?(?:\s+LIMIT\s+(?P<limit>[0-9]+))?\s*",
    re.IGNORECASE | re.DOTALL)
COMPARE = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
           "<": lambda a, b: a < b, "=": lambda a, b: a == b}


def create_app(*, session_lifetime: float = 7200, max_batch: int = 2000, locator_ttl: float = 900,
               api_limit: int = 100_000) -> FastAPI:
    app = FastAPI()
    state = app.state
    state.client_id, state.client_secret = CLIENT_ID, CLIENT_SECRET
    state.orgs = {ORG_ID: Org(ORG_ID, "Acme Corporation", False, api_limit=api_limit),
                  SANDBOX_ORG_ID: Org(SANDBOX_ORG_ID, "Acme Corporation (UAT sandbox)", True, api_limit=api_limit)}
    state.sandbox_logins = set()
    state.max_batch = max_batch
    state.codes, state.sessions, state.refresh = {}, {}, {}
    state.locators = {}
    state.locator_ids = itertools.count(1)
    state.calls, state.refreshes, state.batch_sizes, state.subrequests = [], 0, [], []
    state.refuse_locators = 0
    state.failing_queries = 0

    def origin(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def org_of_login(request: Request) -> Org:
        return state.orgs[SANDBOX_ORG_ID if origin(request) in state.sandbox_logins else ORG_ID]

    # ------------------------------------------------------------ OAuth

    @app.get("/services/oauth2/authorize")
    async def authorize(request: Request):
        query = dict(request.query_params)
        if query.get("client_id") != state.client_id:
            return oauth_error("invalid_client_id", "client identifier invalid")
        if query.get("response_type") != "code" or not query.get("redirect_uri"):
            return oauth_error("unsupported_response_type", "response type not supported")
        if not set((query.get("scope") or "api").split()) <= SCOPES:
            return oauth_error("invalid_scope", "the requested scope is not allowed")
        if "code_challenge" in query and query.get("code_challenge_method", "S256") != "S256":
            return oauth_error("invalid_request", "invalid code_challenge_method")
        code = "aPrx" + secrets.token_urlsafe(24)
        state.codes[code] = {"redirect_uri": query["redirect_uri"], "challenge": query.get("code_challenge"),
                             "login": origin(request), "org": org_of_login(request).id}
        back = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        return RedirectResponse(f"{query['redirect_uri']}?{urlencode(back)}", status_code=302)

    def token_answer(request: Request, org: Org, refresh_token: str | None) -> dict[str, Any]:
        access = f"{org.id[:15]}!AQ{secrets.token_urlsafe(32)}"
        state.sessions[access] = (org.id, time.time() + session_lifetime)
        login = origin(request)
        if org.instance is None:
            org.instance = login
        identity, issued_at = f"{login}/id/{org.id}/{USER_ID}", str(int(time.time() * 1000))
        signature = base64.b64encode(hmac.new(state.client_secret.encode(), (identity + issued_at).encode(),
                                              hashlib.sha256).digest()).decode()
        answer = {"access_token": access, "signature": signature, "scope": "api refresh_token",
                  "instance_url": org.instance, "id": identity, "token_type": "Bearer", "issued_at": issued_at}
        if refresh_token:
            answer["refresh_token"] = refresh_token
        return answer

    @app.post("/services/oauth2/token")
    async def token(request: Request):
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("client_id") != state.client_id:
            return oauth_error("invalid_client_id", "client identifier invalid")
        if form.get("client_secret") != state.client_secret:
            return oauth_error("invalid_client", "invalid client credentials")
        grant = form.get("grant_type")
        if grant == "authorization_code":
            issued = state.codes.pop(form.get("code", ""), None)
            if issued is None or issued["login"] != origin(request):
                return oauth_error("invalid_grant", "authentication failure")
            if issued["redirect_uri"] != form.get("redirect_uri"):
                return oauth_error("redirect_uri_mismatch", "redirect_uri must match configuration")
            verifier = form.get("code_verifier") or ""
            if issued["challenge"] is not None and base64.urlsafe_b64encode(
                    hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode() != issued["challenge"]:
                return oauth_error("invalid_grant", "invalid code verifier")
            refresh_token = "5Aep" + secrets.token_urlsafe(40)
            state.refresh[refresh_token] = (issued["org"], origin(request))
            return token_answer(request, state.orgs[issued["org"]], refresh_token)
        if grant == "refresh_token":
            held = state.refresh.get(form.get("refresh_token", ""))
            if held is None or held[1] != origin(request):
                return oauth_error("invalid_grant", "expired access/refresh token")
            state.refreshes += 1
            return token_answer(request, state.orgs[held[0]], None)
        return oauth_error("unsupported_grant_type", "grant type not supported")

    # ------------------------------------------------------------ sessions and the allocation

    @app.middleware("http")
    async def gate(request: Request, call_next):
        # Salesforce's front door takes 16,384 bytes of URL, and of URL and headers together.
        uri = len(request.scope.get("raw_path") or request.url.path.encode()) + (
            len(request.scope["query_string"]) + 1 if request.scope.get("query_string") else 0)
        head = uri + sum(len(k) + len(v) + 4 for k, v in request.scope["headers"])
        if uri > MAX_REQUEST_HEAD:
            return PlainTextResponse("414 URI Too Long", status_code=414)
        if head > MAX_REQUEST_HEAD:
            return PlainTextResponse("431 Request Header Fields Too Large", status_code=431)
        if not request.url.path.startswith("/services/data/"):
            return await call_next(request)
        header = request.headers.get("authorization", "")
        session = state.sessions.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if session is None or session[1] <= time.time():
            return error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        org: Org = state.orgs[session[0]]
        request.state.org = org
        state.calls.append((origin(request), request.method, request.url.path))
        if org.concurrency_refusals > 0:
            org.concurrency_refusals -= 1
            return error(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.")
        if org.api_used >= org.api_limit:
            refused = error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            refused.headers["Sforce-Limit-Info"] = f"api-usage={org.api_used}/{org.api_limit}"
            return refused
        org.api_used += 1
        response = await call_next(request)
        response.headers["Sforce-Limit-Info"] = f"api-usage={org.api_used}/{org.api_limit}"
        return response

    # ------------------------------------------------------------ queries

    def view(sobject: str, row: dict[str, Any], names: list[str], version: str) -> dict[str, Any]:
        return {"attributes": {"type": sobject, "url": f"/services/data/{version}/sobjects/{sobject}/{row['Id']}"},
                **{name: row.get(name) for name in names}}

    def batch(options_header: str) -> int:
        """The batch a query answers: as ``Sforce-Query-Options: batchSize=`` asks, 200 to 2,000."""
        options = dict(part.strip().split("=", 1) for part in options_header.split(",") if "=" in part)
        try:
            asked = int(options.get("batchSize", MAX_DEFAULT))
        except ValueError:
            asked = MAX_DEFAULT
        state.batch_sizes.append(asked)
        return min(max(200, min(asked, 2000)), state.max_batch)

    def answer(version: str, locator_id: str, offset: int, size: int) -> dict[str, Any]:
        found: Locator = state.locators[locator_id]
        found.used = time.time()
        records = found.records[offset:offset + size]
        body: dict[str, Any] = {"totalSize": len(found.records), "done": offset + size >= len(found.records),
                                "records": records}
        if not body["done"]:
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator_id}-{offset + size}"
        return body

    def run_query(org: Org, soql: str, version: str, options_header: str) -> tuple[int, Any]:
        """A SOQL query's status and body (its first batch, or an error array),
        asked in a URL or in a composite subrequest alike."""
        if state.failing_queries > 0:
            state.failing_queries -= 1
            return 500, errors("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if "
                                                    f"you contact support: {secrets.randbelow(10**9)}-"
                                                    f"{secrets.randbelow(10**5)} (-{secrets.randbelow(10**9)})")
        if len(soql) > MAX_SOQL:
            return 400, errors("MALFORMED_QUERY", f"SOQL statements cannot be longer than {MAX_SOQL} characters")
        parsed = QUERY.fullmatch(soql)
        if parsed is None:
            return 400, errors("MALFORMED_QUERY", f"unexpected token in: {soql[:80]}")
        names = [n.strip() for n in parsed["fields"].split(",")]
        sobject = parsed["sobject"]
        if sobject == "Organization":
            row = {"Id": org.id, "Name": org.name, "OrganizationType": "Developer Edition",
                   "IsSandbox": org.sandbox, "InstanceName": "CS42" if org.sandbox else "NA135"}
            unknown = [n for n in names if n not in row]
            if unknown:
                return 400, errors("INVALID_FIELD", f"No such column '{unknown[0]}' on entity 'Organization'")
            return 200, {"totalSize": 1, "done": True, "records": [view("Organization", row, names, version)]}
        if sobject not in SOBJECTS:
            return 400, errors("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        unknown = [n for n in names if n not in org.fields(sobject)]
        if unknown:
            return 400, errors("INVALID_FIELD", f"No such column '{unknown[0]}' on entity '{sobject}'. If you are "
                                                f"attempting to use a custom field, be sure to append the '__c'")
        rows = list(org.tables[sobject].values())
        if parsed["field"]:
            try:
                bound = parse_time(parsed["time"])
            except ValueError:
                return 400, errors("INVALID_QUERY_FILTER_OPERATOR", f"invalid date time: {parsed['time']}")
            rows = [r for r in rows if COMPARE[parsed["op"]](parse_time(r[parsed["field"]]), bound)]
        if parsed["order"]:
            order = [n.strip() for n in parsed["order"].split(",")]
            rows.sort(key=lambda r: tuple(str(r.get(n) or "") for n in order))
        if parsed["limit"]:
            rows = rows[:int(parsed["limit"])]
        locator_id = f"01g{next(state.locator_ids):012d}"
        state.locators[locator_id] = Locator(sobject, [view(sobject, r, names, version) for r in rows], time.time())
        return 200, answer(version, locator_id, 0, batch(options_header))

    def more_of(locator: str, version: str, options_header: str) -> tuple[int, Any]:
        """The batch of a query locator (``nextRecordsUrl``), or 400 INVALID_QUERY_LOCATOR."""
        locator_id, _, offset = locator.partition("-")
        found = state.locators.get(locator_id)
        if state.refuse_locators > 0:
            state.refuse_locators -= 1
            found = state.locators.pop(locator_id, None) and None
        if found is None or not offset.isdigit() or time.time() - found.used > locator_ttl:
            state.locators.pop(locator_id, None)
            return 400, errors("INVALID_QUERY_LOCATOR", "invalid query locator")
        return 200, answer(version, locator_id, int(offset), batch(options_header))

    def answered(status: int, body: Any) -> JSONResponse:
        return JSONResponse(body, status_code=status)

    @app.get("/services/data/{version}/query")
    async def query(request: Request, version: str):
        return answered(*run_query(request.state.org, request.query_params.get("q", ""), version,
                                   request.headers.get("sforce-query-options", "")))

    @app.get("/services/data/{version}/query/{locator}")
    async def more(request: Request, version: str, locator: str):
        return answered(*more_of(locator, version, request.headers.get("sforce-query-options", "")))

    # ------------------------------------------------------------ composite

    def subrequest_problem(sub: Any, seen: set[str]) -> str | None:
        """What makes a composite subrequest malformed (the whole call is then a 400)."""
        if not isinstance(sub, dict):
            return "a subrequest is not an object"
        unknown = set(sub) - {"method", "url", "referenceId", "body", "httpHeaders"}
        if unknown:
            return f"Unrecognized field \"{sorted(unknown)[0]}\" in a subrequest"
        if sub.get("method") not in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            return "method must be one of GET, POST, PATCH, PUT, DELETE (case-sensitive)"
        if not isinstance(sub.get("url"), str) or not sub["url"].startswith("/services/data/"):
            return "url must be a /services/data/vXX.X/ resource"
        reference = sub.get("referenceId")
        if not isinstance(reference, str) or not REFERENCE_ID.fullmatch(reference):
            return "referenceId must be letters, numbers and underscores"
        if reference in seen:
            return f"Duplicate referenceId: {reference}"
        seen.add(reference)
        headers = sub.get("httpHeaders", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            return "httpHeaders must map header names to strings"
        inherited = [h for h in headers if h.lower() in ("accept", "authorization", "content-type")]
        if inherited:
            return f"The {inherited[0]} header is not allowed in a subrequest (it comes from the request)"
        return None

    def subrequest_answer(org: Org, version: str, sub: dict[str, Any]) -> tuple[int, Any]:
        """A subrequest run as its own call would be (this fake serves the query resource only)."""
        state.subrequests.append((sub["method"], sub["url"]))
        path, _, query_string = sub["url"].partition("?")
        options = next((v for k, v in sub.get("httpHeaders", {}).items() if k.lower() == "sforce-query-options"), "")
        found = SUBREQUEST_QUERY.fullmatch(path)
        if sub["method"] != "GET" or found is None:
            return 404, errors("NOT_FOUND", "The requested resource does not exist (this fake serves query "
                                            "subrequests only)")
        if found["version"] != version:
            return 400, errors("INVALID_VERSION", f"A subrequest's version must be the request's ({version})")
        if found["locator"]:
            return more_of(found["locator"], version, options)
        return run_query(org, dict(parse_qsl(query_string)).get("q", ""), version, options)

    @app.post("/services/data/{version}/composite")
    async def composite(request: Request, version: str):
        """Subrequests in one call (which counts as one against the allocation):
        each answered ``{body, httpHeaders, httpStatusCode, referenceId}``
        within a 200; with ``allOrNone``, one failing rolls the others back
        (400 ``PROCESSING_HALTED``)."""
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            return error(400, "JSON_PARSER_ERROR", "Unexpected character: was expecting JSON")
        subs = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subs, list) or not subs:
            return error(400, "JSON_PARSER_ERROR", "compositeRequest is required: a list of subrequests")
        if len(subs) > MAX_SUBREQUESTS:
            return error(400, "LIMIT_EXCEEDED", f"Maximum number of subrequests is {MAX_SUBREQUESTS}")
        if set(body) - {"allOrNone", "collateSubrequests", "compositeRequest"} or not isinstance(
                body.get("allOrNone", False), bool):
            return error(400, "JSON_PARSER_ERROR", "Unrecognized field or value in the composite request")
        seen: set[str] = set()
        problem = next((p for p in (subrequest_problem(sub, seen) for sub in subs) if p), None)
        if problem:
            return error(400, "INVALID_INPUT" if "header" in problem else "JSON_PARSER_ERROR", problem)
        results = []
        for sub in subs:
            status, answer_body = subrequest_answer(request.state.org, version, sub)
            results.append({"body": answer_body, "httpHeaders": {}, "httpStatusCode": status,
                            "referenceId": sub["referenceId"]})
        if body.get("allOrNone") and any(r["httpStatusCode"] >= 400 for r in results):
            for result in results:
                if result["httpStatusCode"] < 400:
                    result.update(httpStatusCode=400, body=errors(
                        "PROCESSING_HALTED", "The transaction was rolled back since another operation in the "
                                             "same transaction failed."))
        return {"compositeResponse": results}

    # ------------------------------------------------------------ sObjects

    def unknown_resource() -> JSONResponse:
        return error(404, "NOT_FOUND", "The requested resource does not exist")

    @app.get("/services/data/{version}/sobjects/{sobject}/deleted/")
    async def deleted(request: Request, sobject: str):
        org: Org = request.state.org
        if sobject not in SOBJECTS:
            return unknown_resource()
        try:
            start = parse_time(request.query_params["start"])
            end = parse_time(request.query_params["end"])
        except (KeyError, ValueError):
            return error(400, "MALFORMED_QUERY", "start and end must be dateTimes (yyyy-MM-ddTHH:mm:ss+00:00)")
        now = datetime.now(timezone.utc)
        if end - start <= timedelta(minutes=1) or start < now - timedelta(days=15) or end > now + timedelta(minutes=1):
            return error(400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate by more "
                                                          "than one minute, within the last 15 days")
        found = [{"id": i, "deletedDate": stamp(when)} for i, when in org.deleted[sobject]
                 if start.timestamp() <= when <= end.timestamp() + 1]
        return {"deletedRecords": found, "earliestDateAvailable": stamp(now.timestamp() - 15 * 86400),
                "latestDateCovered": stamp(end.timestamp())}

    @app.get("/services/data/{version}/sobjects/{sobject}/describe")
    async def describe(request: Request, sobject: str):
        """The sObject's fields in this org (a subset of Salesforce's describe: name, type, custom, flags)."""
        if sobject not in SOBJECTS:
            return unknown_resource()
        org: Org = request.state.org
        kind = SOBJECTS[sobject]

        def described(name: str) -> dict[str, Any]:
            custom = org.custom[sobject].get(name)
            kind_of = custom or ("id" if name == "Id" else "double" if name in kind.numbers else
                                 "date" if name in kind.dates else "datetime" if name.endswith("Date") else "string")
            settable = name not in AUDIT and name not in kind.readonly
            return {"name": name, "type": kind_of, "custom": custom is not None, "createable": settable,
                    "updateable": settable, "nillable": name not in kind.required}

        return {"name": sobject, "custom": False, "fields": [described(n) for n in sorted(org.fields(sobject))]}

    def table(request: Request, sobject: str) -> dict[str, dict[str, Any]] | None:
        return request.state.org.tables.get(sobject)

    @app.get("/services/data/{version}/sobjects/{sobject}/{record_id}")
    async def get(request: Request, version: str, sobject: str, record_id: str):
        rows = table(request, sobject)
        row = rows.get(record_id) if rows is not None else None
        if row is None:
            return unknown_resource()
        wanted = [n.strip() for n in request.query_params.get("fields", "").split(",") if n.strip()]
        fields = request.state.org.fields(sobject)
        unknown = [n for n in wanted if n not in fields]
        if unknown:
            return error(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {sobject}")
        return view(sobject, row, wanted or sorted(fields), version)  # (no fields asked: all of them)

    async def values_of(request: Request, sobject: str, row: dict[str, Any] | None
                        ) -> dict[str, Any] | JSONResponse:
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            return error(400, "JSON_PARSER_ERROR", "Unexpected character: was expecting JSON")
        if not isinstance(body, dict):
            return error(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObject from a non-object")
        kind = SOBJECTS[sobject]
        unknown = [n for n in body if n not in request.state.org.fields(sobject)]
        if unknown:
            return error(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {sobject}")
        frozen = [n for n in body if n in AUDIT or n in kind.readonly]
        if frozen:
            return error(400, "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: "
                         f"{', '.join(frozen)}. Please check the security settings of this field and verify that "
                         f"it is read/write for your profile or permission set.", frozen)
        for name, value in body.items():
            numbers = request.state.org.numbers(sobject)
            wrong = (name in numbers and value is not None and (isinstance(value, bool) or not isinstance(
                value, (int, float)))) or (name in kind.dates and value is not None and not _is_date(value)) or (
                name not in numbers and value is not None and not isinstance(value, str))
            if wrong:
                return error(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {name} from "
                             f"{json.dumps(value)}", [name])
        email = body.get("Email")
        if email and not EMAIL.fullmatch(email):
            return error(400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"])
        merged = {**(row or {}), **body}
        missing = [n for n in kind.required if merged.get(n) in (None, "")]
        if missing:
            return error(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                         missing)
        if kind.unique_email and email:
            taken = next((r for r in request.state.org.tables[sobject].values()
                          if r is not row and (r.get("Email") or "").lower() == email.lower()), None)
            if taken:
                return error(400, "DUPLICATES_DETECTED", "Use one of these records?", [], duplicateResult={
                    "allowSave": False, "duplicateRule": f"Standard_{sobject}_Duplicate_Rule",
                    "duplicateRuleEntityType": sobject, "errorMessage": "You're creating a duplicate record.",
                    "matchResults": [{"entityType": sobject, "matchRecords": [{"record": {"Id": taken["Id"]}}]}]})
        return body

    @app.post("/services/data/{version}/sobjects/{sobject}/")
    async def create(request: Request, sobject: str):
        if sobject not in SOBJECTS:
            return unknown_resource()
        values = await values_of(request, sobject, None)
        if isinstance(values, Response):
            return values
        row = request.state.org.insert(sobject, values)
        return JSONResponse({"id": row["Id"], "success": True, "errors": []}, status_code=201)

    @app.patch("/services/data/{version}/sobjects/{sobject}/{record_id}")
    async def update(request: Request, sobject: str, record_id: str):
        rows = table(request, sobject)
        row = rows.get(record_id) if rows is not None else None
        if row is None:
            return unknown_resource()
        values = await values_of(request, sobject, row)
        if isinstance(values, Response):
            return values
        request.state.org.update(sobject, row, values)
        return Response(status_code=204)

    @app.delete("/services/data/{version}/sobjects/{sobject}/{record_id}")
    async def delete(request: Request, sobject: str, record_id: str):
        rows = table(request, sobject)
        if rows is None or record_id not in rows:
            return error(404, "ENTITY_IS_DELETED" if any(i == record_id for i, _ in request.state.org.deleted.get(
                sobject, [])) else "NOT_FOUND", "The requested resource does not exist")
        request.state.org.delete(sobject, record_id)
        return Response(status_code=204)

    return app


def _is_date(value: Any) -> bool:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str) and len(value) == 10


# ---------------------------------------------------------------- helpers for tests


SEEDS = {
    "Account": lambda n: {"Name": f"Seed account {n}", "Industry": "Manufacturing", "BillingCity": "Paris"},
    "Contact": lambda n: {"FirstName": f"Seed{n}", "LastName": "Contact",
                          "Email": f"seed{n}.{secrets.token_hex(3)}@example.com"},
    "Lead": lambda n: {"FirstName": f"Seed{n}", "LastName": "Lead", "Company": f"Prospect {n}"},
    "Opportunity": lambda n: {"Name": f"Seed deal {n}", "StageName": "Prospecting", "CloseDate": "2030-01-31",
                              "Amount": 1000.0 * n},
}


def seed(app: FastAPI, entity: str, count: int, org: str = ORG_ID, ago: float = 0) -> list[str] | None:
    """Create ``count`` records of ``entity`` (the hub's name) in the org, each
    modified a second after the one before, the last one ``ago`` seconds ago
    (Salesforce keeps times to the second); their ids."""
    sobject = ENTITIES.get(entity)
    if sobject is None:
        return None
    target = app.state.orgs[org]
    start = len(target.tables[sobject])
    last = time.time() - ago
    return [target.insert(sobject, SEEDS[sobject](start + i + 1), moment=last - (count - 1 - i))["Id"]
            for i in range(count)]


def touch(app: FastAPI, entity: str, record_id: str, org: str = ORG_ID, **values: Any) -> None:
    """Change a record in Salesforce (as its users would): its SystemModstamp moves on."""
    target = app.state.orgs[org]
    sobject = ENTITIES[entity]
    target.update(sobject, target.tables[sobject][record_id], values)


def add_custom_field(app: FastAPI, entity: str, name: str, kind: str = "string", org: str = ORG_ID) -> None:
    """The org gets a field of its own (``Tier__c``) on the entity's sObject; existing records hold null."""
    target = app.state.orgs[org]
    sobject = ENTITIES[entity]
    target.custom[sobject][name] = kind
    for row in target.tables[sobject].values():
        row.setdefault(name, None)


def view_in_ui(app: FastAPI, entity: str, record_id: str, org: str = ORG_ID) -> None:
    """A user opens the record in Salesforce: its LastViewedDate and
    LastReferencedDate move, its SystemModstamp does not."""
    row = app.state.orgs[org].tables[ENTITIES[entity]][record_id]
    row["LastViewedDate"] = row["LastReferencedDate"] = stamp(time.time())


def expire_tokens(app: FastAPI) -> None:
    """Every session the fake issued ends (its refresh tokens still work)."""
    app.state.sessions = {token: (org, 0.0) for token, (org, _) in app.state.sessions.items()}


def expire_locators(app: FastAPI) -> None:
    """Every query locator the fake handed out is gone (as after 15 minutes unused)."""
    app.state.locators.clear()
