"""A fake QuickBooks Online for tests, served over real HTTP: Intuit's OAuth 2
endpoints (authorize, token with HTTP Basic client auth, revoke), companies
(realms) with the Accounting API's paths, its query language (the subset the
plugin speaks: entity, ``Active`` and ``MetaData.LastUpdatedTime`` conditions,
``ORDERBY``, ``STARTPOSITION``, ``MAXRESULTS``), ``SyncToken`` concurrency,
``requestid`` replays, Fault bodies, per-company limits answered 429 without
Retry-After, and webhook deliveries signed with the app's verifier token in
both of Intuit's formats.
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
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse

from hub.testing.fakes import WindowLimit

CLIENT_ID = "ABqbo_client_id_0001"
CLIENT_SECRET = "qbo_client_secret_0001"
VERIFIER_TOKEN = "qbo-verifier-token-0001"
REALM = "9130357766900001"
OTHER_REALM = "9130357766900002"
SCOPE = "com.intuit.quickbooks.accounting"
SIGNATURE_HEADER = "intuit-signature"
#: QuickBooks writes times in the company's time zone (this one's: US Pacific, daylight time).
COMPANY_TZ = timezone(timedelta(hours=-7))
REFRESH_LIFETIME = 8_726_400  # ~101 days
NAME_LISTS = ("Customer", "Vendor", "Item", "Account")
TRANSACTIONS = ("Invoice", "Payment")
ENTITIES = NAME_LISTS + TRANSACTIONS
CLASSIFICATIONS = {"Bank": "Asset", "Accounts Receivable": "Asset", "Other Current Asset": "Asset",
                   "Fixed Asset": "Asset", "Accounts Payable": "Liability", "Credit Card": "Liability",
                   "Other Current Liability": "Liability", "Equity": "Equity", "Income": "Revenue",
                   "Other Income": "Revenue", "Expense": "Expense", "Cost of Goods Sold": "Expense",
                   "Other Expense": "Expense"}
ITEM_TYPES = ("Service", "NonInventory", "Inventory", "Category")


def fault(status: int, code: str, message: str, detail: str = "", element: str = "",
          kind: str = "ValidationFault") -> JSONResponse:
    return JSONResponse({"Fault": {"Error": [{"Message": message, "Detail": detail or message, "code": code,
                                              "element": element}], "type": kind}, "time": _stamp()},
                        status_code=status)


class Refused(Exception):
    """A request QuickBooks refuses: answered as a Fault."""

    def __init__(self, code: str, message: str, detail: str = "", element: str = "", status: int = 400):
        super().__init__(message)
        self.response = fault(status, code, message, detail, element)


def _stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(COMPANY_TZ)).astimezone(COMPANY_TZ).isoformat(timespec="seconds")


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=COMPANY_TZ)


class Company:
    """One QuickBooks company: its records by entity, one id sequence (QuickBooks
    numbers every record of a company in one series), its clock, its limits."""

    def __init__(self, realm: str, per_second: int, per_minute: int):
        self.realm = realm
        self.tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ENTITIES}
        self.deleted: set[tuple[str, str]] = set()
        self.ids = itertools.count(1)
        self.doc_numbers = itertools.count(1001)
        self.seeded = itertools.count(1)  # (names of seeded records)
        self.last = datetime.now(COMPANY_TZ).replace(microsecond=0) - timedelta(days=1)
        self.requests: dict[str, tuple[int, Any]] = {}
        self.second = WindowLimit(per_second, 1.0)
        self.minute = WindowLimit(per_minute, 60.0)
        self.lock = threading.RLock()

    def tick(self) -> str:
        """A modification time: now, to the second, and later than the last one
        (so that records of one test have distinct times)."""
        now = datetime.now(COMPANY_TZ).replace(microsecond=0)
        self.last = max(now, self.last + timedelta(seconds=1))
        return _stamp(self.last)

    def find(self, name: str, record_id: str, writing: bool = False) -> dict[str, Any]:
        """The record ``name`` ``record_id``, or Fault 610. A write to a
        transaction Id it does not hold is answered "Another user has deleted
        this transaction" whether it was deleted or never made (as reported
        of QuickBooks for a JournalEntry sent with an Id of its own, and for
        deleted sales receipts); a name list's with the "made inactive" text
        of a reference to an inactive record (what QuickBooks answers there
        is not documented: this fake's guess, which the plugin does not rely
        on). Reads: "deleted" for a deleted transaction, else "made inactive"."""
        row = self.tables[name].get(str(record_id))
        if row is None:
            deleted = (name, str(record_id)) in self.deleted or (writing and name in TRANSACTIONS)
            detail = ("Object Not Found : Another user has deleted this transaction." if deleted
                      else "Object Not Found : Something you're trying to use has been made inactive. Check the "
                           "fields with accounts, customers, items, vendors or employees.")
            raise Refused("610", "Object Not Found", detail)
        return row

    def active(self, name: str, ref: Any, element: str) -> dict[str, Any]:
        """The active record a reference (``{"value": id}``) names."""
        value = ref.get("value") if isinstance(ref, dict) else None
        row = self.tables[name].get(str(value))
        if row is None or row.get("Active") is False:
            raise Refused("610", "Object Not Found", "Object Not Found : Something you're trying to use has been "
                                                     "made inactive. Check the fields with accounts, customers, "
                                                     "items, vendors or employees.", element)
        return row

    # -- writes

    def create(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            stamp = self.tick()
            row = {"domain": "QBO", "sparse": False, "Id": str(next(self.ids)), "SyncToken": "0",
                   "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp}}
            row.update(self.shape(name, data, None))
            self.tables[name][row["Id"]] = row
            return row

    def update(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if data.get("Id") in (None, "") or data.get("SyncToken") in (None, ""):
                missing = "Id" if data.get("Id") in (None, "") else "SyncToken"
                raise Refused("2020", "Required param missing, need to supply the required value for the API",
                              f"Required parameter {missing} is missing in the request", missing)
            row = self.find(name, str(data["Id"]), writing=True)
            if str(data["SyncToken"]) != row["SyncToken"]:
                raise Refused("5010", "Stale Object Error",
                              "Stale Object Error : You and another user were working on this at the same time. "
                              "They finished before you did, so your work was not saved.")
            changes = {k: v for k, v in data.items() if k not in ("Id", "SyncToken", "sparse", "MetaData", "domain")}
            if data.get("sparse") is not True:  # a full update: what it leaves out is cleared
                changes = {**{k: None for k in row if k not in SYSTEM}, **changes}
            shaped = self.shape(name, {**{k: v for k, v in row.items() if k not in SYSTEM}, **changes}, row)
            row.update(shaped)
            for key in [k for k, v in row.items() if v is None]:
                del row[key]
            row["SyncToken"] = str(int(row["SyncToken"]) + 1)
            row["MetaData"] = {**row["MetaData"], "LastUpdatedTime": self.tick()}
            return row

    def delete(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if name not in TRANSACTIONS:
                raise Refused("500", "Unsupported Operation", "Operation Delete is not supported.")
            row = self.find(name, str(data.get("Id")), writing=True)
            if str(data.get("SyncToken")) != row["SyncToken"]:
                raise Refused("5010", "Stale Object Error", "Stale Object Error : You and another user were "
                                                            "working on this at the same time.")
            del self.tables[name][row["Id"]]
            self.deleted.add((name, row["Id"]))
            return {"status": "Deleted", "domain": "QBO", "Id": row["Id"]}

    def shape(self, name: str, data: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
        """The fields a record of ``name`` keeps, checked and completed as QuickBooks does."""
        data = {k: v for k, v in data.items() if k in KEPT[name]}
        if name in NAME_LISTS:
            data.setdefault("Active", True)
        if name in ("Customer", "Vendor"):
            parts = [data.get(k) for k in ("GivenName", "FamilyName") if data.get(k)]
            data.setdefault("DisplayName", " ".join(parts) or data.get("CompanyName"))
            if not data.get("DisplayName"):
                raise Refused("2020", "Required param missing, need to supply the required value for the API",
                              "Required parameter DisplayName is missing in the request", "DisplayName")
            data.setdefault("PrintOnCheckName", data["DisplayName"])
            data.setdefault("Balance", 0)
            data.setdefault("CurrencyRef", {"value": "USD", "name": "United States Dollar"})
            if name == "Customer":
                data["FullyQualifiedName"] = data["DisplayName"]
                data.setdefault("Taxable", False)
        if name in ("Item", "Account"):
            if not data.get("Name"):
                raise Refused("2020", "Required param missing, need to supply the required value for the API",
                              "Required parameter Name is missing in the request", "Name")
            data["FullyQualifiedName"] = data["Name"]
        if name == "Item":
            data.setdefault("Type", "Service")
            if data["Type"] not in ITEM_TYPES:
                raise Refused("2170", "Invalid Enumeration", f"Invalid Enumeration : {data['Type']}", "Type")
            data.setdefault("Taxable", False)
        if name == "Account":
            if data.get("AccountType") not in CLASSIFICATIONS:
                raise Refused("2170", "Invalid Enumeration", f"Invalid Enumeration : {data.get('AccountType')}",
                              "AccountType")
            data["Classification"] = CLASSIFICATIONS[data["AccountType"]]
            data.setdefault("SubAccount", False)
            data.setdefault("CurrentBalance", 0)
            data.setdefault("CurrencyRef", {"value": "USD", "name": "United States Dollar"})
        if name in ("Customer", "Vendor", "Item", "Account") and data.get("Active") is not False:
            key = "DisplayName" if name in ("Customer", "Vendor") else "Name"
            if any(r.get(key) == data[key] and r.get("Active") and r is not current
                   for r in self.tables[name].values()):
                raise Refused("6240", "Duplicate Name Exists Error",
                              f"The name supplied already exists. : Another {name.lower()} is already using this "
                              f"name. Please use a different name.", key)
        if name in TRANSACTIONS:
            customer = self.active("Customer", data.get("CustomerRef"), "CustomerRef")
            data["CustomerRef"] = {"value": customer["Id"], "name": customer["DisplayName"]}
            data.setdefault("TxnDate", datetime.now(COMPANY_TZ).date().isoformat())
            data.setdefault("CurrencyRef", {"value": "USD", "name": "United States Dollar"})
        if name == "Invoice":
            self._invoice(data, current)
        if name == "Payment":
            if not isinstance(data.get("TotalAmt"), (int, float)):
                raise Refused("2020", "Required param missing, need to supply the required value for the API",
                              "Required parameter TotalAmt is missing in the request", "TotalAmt")
            lines = data.setdefault("Line", [])
            data["UnappliedAmt"] = round(data["TotalAmt"] - sum(float(line.get("Amount") or 0) for line in lines), 2)
        return data

    def _invoice(self, data: dict[str, Any], current: dict[str, Any] | None) -> None:
        lines = [line for line in data.get("Line") or [] if line.get("DetailType") != "SubTotalLineDetail"]
        if not lines:
            raise Refused("2020", "Required param missing, need to supply the required value for the API",
                          "Required parameter Line is missing in the request", "Line")
        shaped = []
        for number, line in enumerate(lines, 1):
            if not isinstance(line.get("Amount"), (int, float)) or line.get("DetailType") != "SalesItemLineDetail":
                raise Refused("6000", "A business validation error has occurred while processing your request",
                              "Business Validation Error: You must set a transaction amount and "
                              "DetailType SalesItemLineDetail for each line.", f"Line.{number - 1}.Amount")
            detail = dict(line.get("SalesItemLineDetail") or {})
            item = self.active("Item", detail["ItemRef"], f"Line.{number - 1}.SalesItemLineDetail.ItemRef") \
                if detail.get("ItemRef") else None
            if item:
                detail["ItemRef"] = {"value": item["Id"], "name": item["Name"]}
            shaped.append({"Id": str(number), "LineNum": number, "Amount": float(line["Amount"]),
                           "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": detail,
                           **({"Description": line["Description"]} if line.get("Description") else {})})
        total = round(sum(line["Amount"] for line in shaped), 2)
        data["Line"] = shaped + [{"Amount": total, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}]
        data["TotalAmt"] = total
        data["Balance"] = total
        data.setdefault("DocNumber", current.get("DocNumber") if current else str(next(self.doc_numbers)))
        due = date.fromisoformat(data["TxnDate"]) + timedelta(days=30)
        data.setdefault("DueDate", due.isoformat())
        data.setdefault("EmailStatus", "NotSet")


SYSTEM = ("domain", "sparse", "Id", "SyncToken", "MetaData")
_PARTY = ("DisplayName", "GivenName", "FamilyName", "CompanyName", "PrintOnCheckName", "PrimaryEmailAddr",
          "PrimaryPhone", "BillAddr", "Active", "Balance", "CurrencyRef")
#: The fields each entity keeps (the plugin's schema lists the same).
KEPT = {
    "Customer": _PARTY + ("FullyQualifiedName", "Notes", "Taxable"),
    "Vendor": _PARTY + ("AcctNum", "Vendor1099"),
    "Item": ("Name", "FullyQualifiedName", "Type", "Sku", "Description", "UnitPrice", "PurchaseCost", "Taxable",
             "QtyOnHand", "IncomeAccountRef", "ExpenseAccountRef", "Active"),
    "Account": ("Name", "FullyQualifiedName", "AccountType", "AccountSubType", "Classification", "AcctNum",
                "Description", "SubAccount", "ParentRef", "CurrentBalance", "Active", "CurrencyRef"),
    "Invoice": ("DocNumber", "TxnDate", "DueDate", "CustomerRef", "Line", "TotalAmt", "Balance", "PrivateNote",
                "CustomerMemo", "BillEmail", "EmailStatus", "CurrencyRef"),
    "Payment": ("TxnDate", "CustomerRef", "TotalAmt", "UnappliedAmt", "PaymentRefNum", "PrivateNote",
                "DepositToAccountRef", "Line", "CurrencyRef"),
}

# -- the query language (the subset the plugin speaks)

QUERY = re.compile(
    r"SELECT\s+\*\s+FROM\s+(?P<entity>\w+)(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDERBY\s+(?P<order>[\w.]+)(?:\s+(?P<direction>ASC|DESC))?)?"
    r"(?:\s+STARTPOSITION\s+(?P<start>\d+))?(?:\s+MAXRESULTS\s+(?P<max>\d+))?\s*", re.IGNORECASE | re.DOTALL)
CONDITION = re.compile(
    r"(?P<field>[\w.]+)\s*(?:(?P<op>>=|<=|=|>|<)\s*(?P<value>'[^']*'|true|false)"
    r"|\s+IN\s*\((?P<values>[^)]*)\))", re.IGNORECASE)


def _parse_error(query: str) -> Refused:
    return Refused("4000", "Error parsing query", f"QueryParserError: Encountered an unexpected token in \"{query}\"")


def _field(row: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row


def _literal(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    raise ValueError(text)


def _compare(field: str, left: Any, op: str, right: Any) -> bool:
    if field.lower() == "metadata.lastupdatedtime":
        left, right = _parse_time(left), _parse_time(right)
    elif field.lower() == "id":
        left, right = int(left), int(right)
    return {"=": left == right, ">": left > right, "<": left < right, ">=": left >= right, "<=": left <= right}[op]


def run_query(company: Company, query: str) -> dict[str, Any]:
    match = QUERY.fullmatch(query.strip())
    if not match or match.group("entity") not in ENTITIES:
        raise _parse_error(query)
    name = match.group("entity")
    rows = list(company.tables[name].values())
    filters_active = False
    for clause in re.split(r"\s+AND\s+", match.group("where") or "", flags=re.IGNORECASE) if match.group("where") else []:
        condition = CONDITION.fullmatch(clause.strip())
        field = condition.group("field") if condition else ""
        if not condition or field.lower() not in ("active", "id", "metadata.lastupdatedtime"):
            raise _parse_error(query)
        try:
            if condition.group("values") is not None:
                wanted = [_literal(v) for v in condition.group("values").split(",")]
                if field.lower() == "id":
                    wanted = [str(v) for v in wanted]
                rows = [r for r in rows if _field(r, field) in wanted]
            else:
                value = _literal(condition.group("value"))
                rows = [r for r in rows if _field(r, field) is not None
                        and _compare(field, _field(r, field), condition.group("op"), value)]
        except ValueError:
            raise _parse_error(query) from None
        filters_active |= field.lower() == "active"
    if name in NAME_LISTS and not filters_active:
        rows = [r for r in rows if r.get("Active")]  # a name list's query answers active records unless asked
    order = match.group("order") or "Id"
    descending = (match.group("direction") or "").upper() == "DESC"
    if order.lower() == "id":
        key = lambda r: int(r["Id"])  # noqa: E731
    elif order.lower() == "metadata.lastupdatedtime":
        key = lambda r: (_parse_time(r["MetaData"]["LastUpdatedTime"]), int(r["Id"]))  # noqa: E731
    else:
        raise _parse_error(query)
    rows.sort(key=key, reverse=descending)  # (ties broken by Id: a stable order pages every record once)
    start = int(match.group("start") or 1)
    size = min(int(match.group("max") or 100), 1000)
    if start < 1:
        raise _parse_error(query)
    page = rows[start - 1:start - 1 + size]
    if not page:
        return {"QueryResponse": {}, "time": _stamp()}
    return {"QueryResponse": {name: page, "startPosition": start, "maxResults": len(page)}, "time": _stamp()}


# -- the app


def create_app(customers: int = 3, per_second: int = 10, per_minute: int = 500, access_ttl: float = 3600,
               realms: tuple[str, ...] = (REALM, OTHER_REALM)) -> FastAPI:
    """A fake Intuit: ``per_second`` and ``per_minute`` are each company's limits
    (QuickBooks': 10 and 500), ``access_ttl`` the access tokens' lifetime."""
    app = FastAPI()
    app.state.companies = {realm: Company(realm, per_second, per_minute) for realm in realms}
    app.state.codes = {}  # code: (redirect_uri, realm)
    app.state.access = {}  # access token: (realm, expiry on the monotonic clock)
    app.state.refresh = {}  # refresh token: realm
    app.state.refreshed = []  # the refresh tokens used, in order
    app.state.revoked = []
    app.state.calls = []  # (method, path, query) of each API call let through
    app.state.access_ttl = access_ttl
    app.state.lose_answers = 0  # the next writes applied and answered 503 (see lose_answers)
    for realm in realms:
        for number in range(customers):
            app.state.companies[realm].create("Customer", {"DisplayName": f"Customer {number + 1}",
                                                           "PrimaryEmailAddr": {"Address": f"c{number + 1}@example.com"}})

    @app.middleware("http")
    async def gate(request: Request, call_next):
        parts = request.url.path.split("/")
        if parts[1:3] != ["v3", "company"]:
            return await call_next(request)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        granted = app.state.access.get(token)
        if granted is None or granted[1] < time.monotonic():
            return JSONResponse(unauthorized(), status_code=401)
        company = app.state.companies.get(parts[3] if len(parts) > 3 else "")
        if company is None or granted[0] != company.realm:
            return fault(403, "003100", "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                         "The app is not authorized to access this company", kind="AuthorizationFault")
        for limit in (company.second, company.minute):
            if not limit.hit().allowed:
                if limit is company.minute:
                    company.second.give_back()
                # (No Retry-After: Intuit advises waiting 60 seconds.)
                return fault(429, "003001", "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                             "The request limit was reached.", kind="SERVICE")
        app.state.calls.append((request.method, request.url.path, dict(request.query_params)))
        return await call_next(request)

    def issue(realm: str) -> dict[str, Any]:
        access, refresh = "eyJqbo." + secrets.token_urlsafe(24), "AB11" + secrets.token_urlsafe(24)
        app.state.access[access] = (realm, time.monotonic() + app.state.access_ttl)
        app.state.refresh[refresh] = realm
        return {"token_type": "bearer", "access_token": access, "refresh_token": refresh,
                "expires_in": int(app.state.access_ttl), "x_refresh_token_expires_in": REFRESH_LIFETIME}

    def client_ok(request: Request) -> bool:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        return hmac.compare_digest(request.headers.get("authorization", ""), f"Basic {expected}")

    @app.get("/connect/oauth2")
    async def authorize(client_id: str, response_type: str, scope: str, redirect_uri: str, state: str,
                        realm: str = REALM):
        # The fake user consents at once, choosing the company ``realm`` (a test's choice).
        if client_id != CLIENT_ID or response_type != "code" or SCOPE not in scope.split():
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = "AB" + secrets.token_urlsafe(16)
        app.state.codes[code] = (redirect_uri, realm)
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state, 'realmId': realm})}")

    @app.post("/oauth2/v1/tokens/bearer")
    async def token(request: Request, grant_type: str = Form(), code: str = Form(""), redirect_uri: str = Form(""),
                    refresh_token: str = Form("")):
        if not client_ok(request):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if grant_type == "authorization_code":
            redirect, realm = app.state.codes.pop(code, (None, None))
            if redirect is not None and redirect == redirect_uri:
                return issue(realm)
        if grant_type == "refresh_token" and refresh_token in app.state.refresh:
            # The refresh token rotates: the one used stops working.
            app.state.refreshed.append(refresh_token)
            return issue(app.state.refresh.pop(refresh_token))
        return JSONResponse({"error": "invalid_grant"}, status_code=400)

    @app.post("/v2/oauth2/tokens/revoke")
    async def revoke(request: Request):
        if not client_ok(request):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        revoked = (await request.json()).get("token")
        app.state.revoked.append(revoked)
        app.state.refresh.pop(revoked, None)
        app.state.access.pop(revoked, None)
        return JSONResponse({})

    @app.get("/v3/company/{realm}/companyinfo/{company_id}")
    async def company_info(realm: str, company_id: str):
        if company_id != realm:
            return fault(400, "610", "Object Not Found", "Object Not Found : Something you're trying to use "
                                                         "has been made inactive.")
        return {"CompanyInfo": {"Id": "1", "SyncToken": "0", "CompanyName": f"Company {realm[-4:]}",
                                "Country": "US", "domain": "QBO", "sparse": False}, "time": _stamp()}

    @app.get("/v3/company/{realm}/query")
    async def query(realm: str, query: str):
        try:
            return run_query(app.state.companies[realm], query)
        except Refused as refused:
            return refused.response

    @app.get("/v3/company/{realm}/{resource}/{record_id}")
    async def read(realm: str, resource: str, record_id: str):
        name = _entity(resource)
        if name is None:
            return fault(400, "500", "Unsupported Operation", f"Operation {resource} is not supported.")
        try:
            return {name: app.state.companies[realm].find(name, record_id), "time": _stamp()}
        except Refused as refused:
            return refused.response

    @app.post("/v3/company/{realm}/{resource}")
    async def write(realm: str, resource: str, request: Request, operation: str = "", requestid: str = ""):
        company = app.state.companies[realm]
        name = _entity(resource)
        if name is None:
            return fault(400, "500", "Unsupported Operation", f"Operation {resource} is not supported.")
        if len(requestid) > 50:
            return fault(400, "2050", "Length exceeds the limit", "requestid is longer than 50 characters",
                         "requestid")
        raw = await request.body()
        with company.lock:
            if requestid and requestid in company.requests:  # the same request: its first answer again
                status, body = company.requests[requestid]
                return JSONResponse(body, status_code=status)
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError
            except ValueError:
                return fault(400, "2010", "Request has invalid or unsupported property", "the body is no object")
            try:
                if operation == "delete":
                    answer = {name: company.delete(name, data)}
                elif data.get("Id") not in (None, ""):
                    answer = {name: company.update(name, data)}
                else:
                    answer = {name: company.create(name, data)}
                status, body = 200, {**answer, "time": _stamp()}
            except Refused as refused:
                status, body = refused.response.status_code, json.loads(refused.response.body)
            if requestid:
                company.requests[requestid] = (status, json.loads(json.dumps(body)))
            if status == 200 and app.state.lose_answers > 0:
                app.state.lose_answers -= 1  # applied, but the answer is lost on the way
                return fault(503, "10000", "An application error has occurred while processing your request",
                             "System Failure Error: the service is unavailable", kind="SystemFault")
            return JSONResponse(body, status_code=status)

    return app


def _entity(resource: str) -> str | None:
    return next((name for name in ENTITIES if name.lower() == resource), None)


def unauthorized() -> dict[str, Any]:
    """The gateway's answer to a token it does not take (lower-case keys, unlike the API's Faults)."""
    return {"warnings": None, "intuitObject": None, "fault": {"error": [{
        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        "detail": "Token expired or invalid", "code": "3200", "element": None}], "type": "AUTHENTICATION"},
        "report": None, "queryResponse": None, "batchItemResponse": [], "attachableResponse": [],
        "syncErrorResponse": None, "requestId": None, "time": int(time.time() * 1000), "status": None,
        "cdcresponse": []}


def company(app: FastAPI, realm: str = REALM) -> Company:
    return app.state.companies[realm]


def lose_answers(app: FastAPI, count: int = 1) -> None:
    """The next ``count`` writes are applied, and answered 503 as if their answer was lost."""
    app.state.lose_answers = count


def expire_tokens(app: FastAPI) -> None:
    """Every access token the fake issued stops working (its refresh tokens still do)."""
    app.state.access.clear()


SAMPLES: dict[str, Any] = {
    "Customer": lambda n: {"DisplayName": f"Seeded customer {n}", "GivenName": "Seeded",
                           "PrimaryEmailAddr": {"Address": f"seed{n}@example.com"}},
    "Vendor": lambda n: {"DisplayName": f"Seeded vendor {n}", "CompanyName": f"Vendor {n} Ltd"},
    "Item": lambda n: {"Name": f"Seeded item {n}", "Type": "Service", "UnitPrice": 10 + n},
    "Account": lambda n: {"Name": f"Seeded account {n}", "AccountType": "Income"},
    "Invoice": lambda n: {"CustomerRef": {"value": "1"}, "Line": [
        {"Amount": 100.0 + n, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"Qty": 1}}]},
    "Payment": lambda n: {"CustomerRef": {"value": "1"}, "TotalAmt": 20.0 + n},
}
HUB_ENTITIES = {"customers": "Customer", "vendors": "Vendor", "items": "Item", "accounts": "Account",
                "invoices": "Invoice", "payments": "Payment"}


def seed(app: FastAPI, entity: str, count: int, realm: str = REALM) -> list[str]:
    """Create ``count`` records of the hub entity ``entity`` in the company; their ids."""
    target = app.state.companies[realm]
    name = HUB_ENTITIES[entity]
    return [target.create(name, SAMPLES[name](next(target.seeded)))["Id"] for _ in range(count)]


# -- webhooks


def sign(body: bytes, token: str = VERIFIER_TOKEN) -> str:
    return base64.b64encode(hmac.new(token.encode(), body, hashlib.sha256).digest()).decode()


def delivery(payload: Any, token: str = VERIFIER_TOKEN) -> tuple[dict[str, str], bytes]:
    """A delivery as Intuit posts it: ``(headers, body)``."""
    body = json.dumps(payload).encode()
    return {SIGNATURE_HEADER: sign(body, token), "Content-Type": "application/json"}, body


def legacy(changes: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The legacy body: per company (realm), its changed entities."""
    return {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": entities}}
                                   for realm, entities in changes.items()]}


def change(name: str, record_id: str, operation: str = "Update", last_updated: str | None = None,
           **extra: Any) -> dict[str, Any]:
    return {"name": name, "id": str(record_id), "operation": operation,
            "lastUpdated": last_updated or datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **extra}


def cloud_event(realm: str, name: str, record_id: str, verb: str = "updated",
                data: dict[str, Any] | None = None) -> dict[str, Any]:
    """One event of the CloudEvents format (``qbo.<entity>.<verb>.v1``); a
    merge names the record merged away in ``data``: ``{"deletedid": "27"}``."""
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58xeeYcZliOU=",
            "type": f"qbo.{name.lower()}.{verb}.v1", "datacontenttype": "application/json",
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "intuitentityid": str(record_id),
            "intuitaccountid": realm, "data": data or {}}


_deliveries = itertools.count(1)


def conformance_webhook(harness, kind: str) -> tuple[dict[str, str], bytes] | None:
    """A signed legacy delivery of a new change for the suite's company;
    none ``stale``: Intuit signs no time."""
    if kind == "stale":
        return None
    return delivery(legacy({REALM: [change("Customer", str(next(_deliveries)), "Update")]}))
