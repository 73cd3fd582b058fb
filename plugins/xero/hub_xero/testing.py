"""A fake Xero for tests, served over real HTTP (one app for every host: the
plugin's ``origin`` setting points login.xero.com, identity.xero.com and
api.xero.com at it).

It behaves like Xero where the plugin depends on it:

- OAuth 2: ``GET /identity/connect/authorize`` approves at once for the
  organisations ``app.state.consent`` lists (the user's choice at Xero) and
  redirects back with a single-use code; ``POST /connect/token`` takes the
  client id and secret as HTTP Basic, checks PKCE, answers access tokens of
  ``token_lifetime`` seconds (Xero's 1800) and a new refresh token on every
  refresh (the old one stops working); ``POST /connect/revocation`` revokes a
  grant and removes all its connections. ``GET /connections`` lists a grant's
  organisations, ``DELETE /connections/{id}`` removes one.
- The Accounting API (``/api.xro/2.0``): every call needs a valid token and a
  ``xero-tenant-id`` the grant covers (else 401 and 403 problem bodies).
  Contacts, Invoices, Payments (paged: ``page``, ``pageSize`` up to 1000,
  default 100, answered with ``pagination`` unless ``app.state.pagination``
  is off), Accounts and Items (answered whole); ``order``, the
  ``If-Modified-Since`` header (UTC, whole seconds), ``includeArchived``;
  ``PUT`` creates, ``POST /{Collection}/{id}`` changes, ``DELETE /Items/{id}``;
  ``Idempotency-Key`` (128 characters at most) answers a repeat with the first
  answer. Times are Xero's ``/Date(ms+0000)/``. Xero's rules: a contact's name
  unique among active contacts, an item's code unique, invoices deleted
  (DRAFT, SUBMITTED) or voided (AUTHORISED, nothing paid) by status,
  payments within what is due and deleted by status; refusals are Xero's
  ValidationException bodies (HTTP 400).
- Limits per tenant (``minute``, ``day``, ``concurrent``) and per app
  (``app_minute``): 429 with ``Retry-After`` and ``X-Rate-Limit-Problem``;
  answers carry ``X-MinLimit-Remaining``, ``X-DayLimit-Remaining`` and
  ``X-AppMinLimit-Remaining``.
- Webhooks (:func:`delivery`): ``{"events": [...], "firstEventSequence",
  "lastEventSequence", "entropy"}`` signed in ``x-xero-signature`` (base64
  HMAC-SHA256 of the body with the webhook key); :func:`intent_to_receive`.

Knobs on ``app.state``: ``consent`` (tenant ids the next authorization
covers), ``refuse_next`` (problems the next API calls are refused with:
``"minute"``, or ``("day", seconds)`` for its Retry-After), ``lose_next``
(the next so many writes are applied but answered 503), ``pagination``. Counters: ``calls`` (method,
path, query and If-Modified-Since of each API call let through), ``refreshes``,
``revoked`` (refresh tokens revoked), ``removed`` (connection ids deleted),
``throttled`` (429s by problem).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from hub.testing.fakes import WindowLimit

CLIENT_ID = "0A1B2C3D4E5F60718293A4B5C6D7E8F9"
CLIENT_SECRET = "xero-test-client-secret-0001"
WEBHOOK_KEY = "xero-test-webhook-key-0001"
TENANT = "6f2c1a3e-0b4d-4c5e-9f60-71a2b3c4d5e6"
OTHER_TENANT = "0d9e8f7a-6b5c-4d3e-8f21-0a9b8c7d6e5f"
THIRD_TENANT = "4b3a2c1d-9e8f-4a6b-8c5d-1e2f3a4b5c6d"
NAMES = {TENANT: "Demo Company (NZ)", OTHER_TENANT: "Second Company Ltd", THIRD_TENANT: "Third Trading"}
#: A bank account (payments go to it) and an AUTHORISED invoice every organisation starts with.
BANK_CODE = "090"
OPEN_INVOICE = "9b1f3c3e-2a4d-4e6f-8a0b-1c2d3e4f5a6b"
SCOPES = {"openid", "profile", "email", "offline_access", "accounting.transactions", "accounting.contacts",
          "accounting.settings"}
PAGED = ("Contacts", "Invoices", "Payments")
COLLECTIONS = {"Contacts": "ContactID", "Invoices": "InvoiceID", "Payments": "PaymentID", "Accounts": "AccountID",
               "Items": "ItemID"}
DAY_FIELDS = ("Date", "DueDate")


def xero_date(ms: int) -> str:
    return f"/Date({ms}+0000)/"


def day_ms(day: str) -> int:
    moment = datetime.combine(date.fromisoformat(day[:10]), datetime.min.time(), tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def problem(status: int, title: str, detail: str) -> JSONResponse:
    """The gateway's refusals (401, 403): a problem body."""
    return JSONResponse({"Type": None, "Title": title, "Status": status, "Detail": detail,
                         "Instance": str(uuid.uuid4()), "Extensions": {}}, status_code=status)


class Invalid(Exception):
    """A record Xero refuses: answered as a ValidationException."""

    def __init__(self, record: dict[str, Any], *messages: str):
        super().__init__(messages[0])
        self.record, self.messages = record, messages

    def response(self) -> JSONResponse:
        return JSONResponse({"ErrorNumber": 10, "Type": "ValidationException",
                             "Message": "A validation exception occurred",
                             "Elements": [{**self.record, "ValidationErrors": [{"Message": m}
                                                                               for m in self.messages]}]},
                            status_code=400)


@dataclass
class Tenant:
    """One Xero organisation: its records, its clock and its limits."""

    id: str
    name: str
    minute: WindowLimit
    day: WindowLimit
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {c: {} for c in COLLECTIONS})
    organisation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    in_flight: int = 0
    last_ms: int = 0
    numbers: collections.Counter = field(default_factory=collections.Counter)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def stamp(self, ms: int | None = None) -> int:
        """Now (or ``ms``) in epoch milliseconds; now is later than any stamp given before."""
        with self.lock:
            if ms is not None:
                return ms
            self.last_ms = max(self.last_ms + 1, int(time.time() * 1000))
            return self.last_ms

    # ------------------------------------------------------------ writing, with Xero's rules

    def write(self, collection: str, data: dict[str, Any], record_id: str | None = None,
              ms: int | None = None) -> dict[str, Any]:
        with self.lock:
            table = self.tables[collection]
            row = table.get(record_id) if record_id else None
            change = {k: v for k, v in data.items() if k != COLLECTIONS[collection]}
            new = dict(row or {})
            getattr(self, f"_{collection.lower()}")(new, change, row is None)
            if row is None:
                new[COLLECTIONS[collection]] = record_id or str(uuid.uuid4())
            new["UpdatedDateUTC"] = self.stamp(ms)
            table[new[COLLECTIONS[collection]]] = new
            return new

    def _contacts(self, row: dict[str, Any], change: dict[str, Any], new: bool) -> None:
        for key in ("Name", "FirstName", "LastName", "EmailAddress", "ContactNumber", "AccountNumber",
                    "CompanyNumber", "TaxNumber", "DefaultCurrency", "ContactStatus", "Addresses", "Phones"):
            if key in change:
                row[key] = change[key]
        row.setdefault("ContactStatus", "ACTIVE")
        row.setdefault("Addresses", [])
        row.setdefault("Phones", [])
        row.setdefault("IsSupplier", False)
        row.setdefault("IsCustomer", False)
        row.setdefault("HasAttachments", False)
        name = (row.get("Name") or "").strip() if isinstance(row.get("Name"), str) else ""
        if not name:
            raise Invalid(change, "The contact name must be specified.")
        email = row.get("EmailAddress")
        if email and (not isinstance(email, str) or "@" not in email or " " in email):
            raise Invalid(change, "Email address must be valid.")
        if row["ContactStatus"] not in ("ACTIVE", "ARCHIVED"):
            raise Invalid(change, f"'{row['ContactStatus']}' is not a valid contact status.")
        if row["ContactStatus"] == "ACTIVE" and any(
                other.get("ContactStatus") == "ACTIVE" and other["ContactID"] != row.get("ContactID")
                and other["Name"].strip().lower() == name.lower() for other in self.tables["Contacts"].values()):
            raise Invalid(change, f"The contact name {name} is already assigned to another contact. The contact "
                                  f"name must be unique across all active contacts.")

    def _contact_ref(self, given: Any, record: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(given, dict):
            raise Invalid(record, "A Contact must be specified for this type of transaction")
        if given.get("ContactID"):
            contact = self.tables["Contacts"].get(str(given["ContactID"]))
            if contact is None:
                raise Invalid(record, "The contact with the specified ContactID does not exist")
        else:
            name = given.get("Name")
            contact = next((c for c in self.tables["Contacts"].values() if c.get("Name") == name), None)
            if contact is None:
                contact = self.write("Contacts", {"Name": name})  # (Xero creates it)
        return {"ContactID": contact["ContactID"], "Name": contact["Name"]}

    def _invoices(self, row: dict[str, Any], change: dict[str, Any], new: bool) -> None:
        status = row.get("Status")
        if status in ("DELETED", "VOIDED"):
            raise Invalid(change, f"This document cannot be edited as it has a status of {status}.")
        wanted = change.get("Status", status or "DRAFT")
        if wanted not in ("DRAFT", "SUBMITTED", "AUTHORISED", "DELETED", "VOIDED", "PAID"):
            raise Invalid(change, f"'{wanted}' is not a valid invoice status.")
        if wanted == "DELETED" and (new or status not in ("DRAFT", "SUBMITTED")):
            raise Invalid(change, "Invoice not of valid status for modification")
        if wanted == "VOIDED" and (new or status not in ("AUTHORISED",) or row.get("AmountPaid")):
            raise Invalid(change, "Invoice not of valid status for modification" + (
                ". This document cannot be voided as it has payments allocated" if row.get("AmountPaid") else ""))
        if wanted == "PAID" and status != "PAID":
            raise Invalid(change, "Invoice status cannot be set to PAID: apply payments")
        for key in ("Type", "InvoiceNumber", "Reference", "Date", "DueDate", "LineAmountTypes", "CurrencyCode"):
            if key in change:
                row[key] = change[key]
        if row.get("Type") not in ("ACCREC", "ACCPAY"):
            raise Invalid(change, "Invoice Type must be specified" if not row.get("Type") else
                          f"'{row['Type']}' is not a valid invoice type.")
        if "Contact" in change or new:
            row["Contact"] = self._contact_ref(change.get("Contact"), change)
            contact = self.tables["Contacts"].get(row["Contact"].get("ContactID"))
            if contact is not None:
                # As Xero: a sales invoice makes its contact a customer, a bill a supplier, and the
                # contact's UpdatedDateUTC stays (If-Modified-Since does not list it again).
                contact["IsCustomer" if row["Type"] == "ACCREC" else "IsSupplier"] = True
        if "LineItems" in change or new:
            lines = change.get("LineItems") or []
            if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
                raise Invalid(change, "LineItems must be a list of line items")
            row["LineItems"] = [self._line(line, change) for line in lines]
        for key in ("Date", "DueDate"):
            if row.get(key) is not None:
                try:
                    day_ms(str(row[key]))
                except ValueError:
                    raise Invalid(change, f"{key} is not a valid date") from None
        row.setdefault("Date", datetime.now(timezone.utc).date().isoformat())
        row.setdefault("LineAmountTypes", "Exclusive")
        row.setdefault("CurrencyCode", "NZD")
        if new and row["Type"] == "ACCREC" and not row.get("InvoiceNumber"):
            self.numbers["INV"] += 1
            row["InvoiceNumber"] = f"INV-{self.numbers['INV']:04d}"
        total = round(sum(line["LineAmount"] for line in row["LineItems"]), 2)
        paid = row.get("AmountPaid", 0.0)
        row |= {"SubTotal": total, "TotalTax": 0.0, "Total": total, "AmountPaid": paid, "AmountCredited": 0.0,
                "AmountDue": round(total - paid, 2), "Status": wanted}

    def _line(self, line: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        try:
            quantity = float(line.get("Quantity", 1))
            unit = float(line.get("UnitAmount", 0))
        except (TypeError, ValueError):
            raise Invalid(record, "Quantity and UnitAmount must be numbers") from None
        if not line.get("Description") and not line.get("ItemCode"):
            raise Invalid(record, "Description needs to be specified for each line item")
        return {"LineItemID": line.get("LineItemID") or str(uuid.uuid4()), "Description": line.get("Description"),
                "Quantity": quantity, "UnitAmount": unit, "AccountCode": line.get("AccountCode", "200"),
                "TaxType": line.get("TaxType", "NONE"), "TaxAmount": 0.0, "LineAmount": round(quantity * unit, 2),
                **({"ItemCode": line["ItemCode"]} if line.get("ItemCode") else {})}

    def _accounts(self, row: dict[str, Any], change: dict[str, Any], new: bool) -> None:
        row |= change
        row.setdefault("Status", "ACTIVE")
        row.setdefault("Class", {"BANK": "ASSET", "REVENUE": "REVENUE"}.get(row.get("Type"), "EXPENSE"))
        row.setdefault("EnablePaymentsToAccount", row.get("Type") == "BANK")

    def _items(self, row: dict[str, Any], change: dict[str, Any], new: bool) -> None:
        for key in ("Code", "Name", "Description", "PurchaseDescription", "IsSold", "IsPurchased", "SalesDetails",
                    "PurchaseDetails"):
            if key in change:
                row[key] = change[key]
        code = row.get("Code")
        if not isinstance(code, str) or not code.strip():
            raise Invalid(change, "Item code must be specified")
        if len(code) > 30:
            raise Invalid(change, "The item code cannot be longer than 30 characters")
        if any(other.get("Code", "").lower() == code.lower() and other["ItemID"] != row.get("ItemID")
               for other in self.tables["Items"].values()):
            raise Invalid(change, f"Item code '{code}' already exists")
        row.setdefault("IsSold", True)
        row.setdefault("IsPurchased", True)
        row.setdefault("IsTrackedAsInventory", False)

    def _payments(self, row: dict[str, Any], change: dict[str, Any], new: bool) -> None:
        if not new:
            if set(change) - {"Status"} or change.get("Status") != "DELETED":
                raise Invalid(change, "Payments can only be deleted (Status DELETED), not changed")
            if row["Status"] == "DELETED":
                return
            invoice = self.tables["Invoices"][row["Invoice"]["InvoiceID"]]
            invoice["AmountPaid"] = round(invoice["AmountPaid"] - row["Amount"], 2)
            invoice["AmountDue"] = round(invoice["Total"] - invoice["AmountPaid"], 2)
            invoice["Status"] = "AUTHORISED"
            invoice["UpdatedDateUTC"] = self.stamp()
            row["Status"] = "DELETED"
            return
        ref = change.get("Invoice") if isinstance(change.get("Invoice"), dict) else {}
        invoice = self.tables["Invoices"].get(str(ref.get("InvoiceID") or "")) or next(
            (i for i in self.tables["Invoices"].values()
             if ref.get("InvoiceNumber") and i.get("InvoiceNumber") == ref.get("InvoiceNumber")), None)
        if invoice is None:
            raise Invalid(change, "Invoice could not be found")
        if invoice["Status"] != "AUTHORISED":
            raise Invalid(change, "Payment cannot be created as the invoice is not AUTHORISED")
        account_ref = change.get("Account") if isinstance(change.get("Account"), dict) else {}
        account = next((a for a in self.tables["Accounts"].values()
                        if a["AccountID"] == account_ref.get("AccountID") or a.get("Code") == account_ref.get("Code")),
                       None)
        if account is None or not account.get("EnablePaymentsToAccount"):
            raise Invalid(change, "Account could not be found or does not allow payments")
        amount = change.get("Amount")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            raise Invalid(change, "Payment amount must be greater than zero")
        if amount > invoice["AmountDue"]:
            raise Invalid(change, "Payment amount exceeds the amount outstanding on this document")
        invoice["AmountPaid"] = round(invoice["AmountPaid"] + amount, 2)
        invoice["AmountDue"] = round(invoice["Total"] - invoice["AmountPaid"], 2)
        if invoice["AmountDue"] == 0:
            invoice["Status"] = "PAID"
        invoice["UpdatedDateUTC"] = self.stamp()
        row |= {"Invoice": {"InvoiceID": invoice["InvoiceID"], "InvoiceNumber": invoice.get("InvoiceNumber")},
                "Account": {"AccountID": account["AccountID"], "Code": account.get("Code")},
                "Date": change.get("Date") or datetime.now(timezone.utc).date().isoformat(), "Amount": amount,
                "Reference": change.get("Reference"), "CurrencyRate": float(change.get("CurrencyRate") or 1.0),
                "Status": "AUTHORISED",
                "PaymentType": "ACCRECPAYMENT" if invoice["Type"] == "ACCREC" else "ACCPAYPAYMENT"}


def view(row: dict[str, Any]) -> dict[str, Any]:
    """A record as Xero answers it: times as ``/Date(ms+0000)/``, dates too
    (with their ``DateString``), unset values left out."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None:
            continue
        if key == "UpdatedDateUTC":
            out[key] = xero_date(value)
        elif key in DAY_FIELDS:
            out[key] = xero_date(day_ms(value))
            out[f"{key}String"] = f"{value[:10]}T00:00:00"
        else:
            out[key] = value
    return out


def _order_key(spec: str | None, id_field: str):
    """Xero's ``order`` (``UpdatedDateUTC ASC, ContactID ASC``): a sort key (ascending fields only)."""
    fields = [part.strip().split()[0] for part in (spec or "").split(",") if part.strip()] or [id_field]
    return lambda row: tuple(str(row.get(f)) if f != "UpdatedDateUTC" else row[f] for f in fields)


def create_app(*, minute: tuple[int, float] = (60, 60.0), day: tuple[int, float] = (5_000, 86_400.0),
               app_minute: tuple[int, float] = (10_000, 60.0), concurrent: int = 5,
               token_lifetime: float = 1800) -> FastAPI:
    app = FastAPI()
    state = app.state
    state.client_id, state.client_secret, state.webhook_key = CLIENT_ID, CLIENT_SECRET, WEBHOOK_KEY
    state.tenants = {}
    state.consent = [TENANT]
    state.codes, state.access, state.refresh, state.grants = {}, {}, {}, {}
    state.idempotent = {}
    state.refuse_next = []
    state.lose_next = 0
    state.pagination = True
    state.app_minute = WindowLimit(*app_minute)
    state.calls, state.refreshes, state.revoked, state.removed = [], 0, [], []
    state.throttled = collections.Counter()

    def tenant(tenant_id: str) -> Tenant:
        if tenant_id not in state.tenants:
            org = Tenant(tenant_id, NAMES.get(tenant_id, f"Organisation {tenant_id[:8]}"), WindowLimit(*minute),
                         WindowLimit(*day))
            for code, name, kind in ((BANK_CODE, "Business Bank Account", "BANK"), ("200", "Sales", "REVENUE"),
                                     ("400", "Advertising", "EXPENSE")):
                org.write("Accounts", {"Code": code, "Name": name, "Type": kind})
            customer = org.write("Contacts", {"Name": "Opening Customer"})
            org.write("Invoices", {"Type": "ACCREC", "Contact": {"ContactID": customer["ContactID"]},
                                   "Status": "AUTHORISED", "Reference": "opening",
                                   "LineItems": [{"Description": "Opening balance", "Quantity": 1,
                                                  "UnitAmount": 100_000}]}, record_id=OPEN_INVOICE)
            state.tenants[tenant_id] = org
        return state.tenants[tenant_id]

    state.tenant = tenant
    for known in NAMES:
        tenant(known)

    # ------------------------------------------------------------ the gateway: auth, tenant, limits

    def grant_of(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        found = state.access.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    def throttled(reason: str, wait: float) -> Response:
        state.throttled[reason] += 1
        return PlainTextResponse(f"You have exceeded the {reason} rate limit", status_code=429, headers={
            "Retry-After": str(max(1, math.ceil(wait))), "X-Rate-Limit-Problem": reason})

    @app.middleware("http")
    async def gate(request: Request, call_next):
        path = request.url.path
        if not path.startswith(("/api.xro/", "/connections")):
            return await call_next(request)
        grant = grant_of(request)
        if grant is None:
            return problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        request.state.grant = grant
        if path.startswith("/connections"):
            return await call_next(request)
        tenant_id = (request.headers.get("xero-tenant-id") or "").lower()
        if tenant_id not in {c["tenantId"] for c in state.grants[grant]["connections"]}:
            return problem(403, "Forbidden", "AuthorizationUnsuccessful")
        org = tenant(tenant_id)
        request.state.tenant = org
        if state.refuse_next:
            reason = state.refuse_next.pop(0)
            reason, wait = reason if isinstance(reason, tuple) else (reason, 1)
            return throttled(reason, wait)
        if org.in_flight >= concurrent:
            return throttled("concurrent", 1)
        for reason, window in (("appminute", state.app_minute), ("minute", org.minute), ("day", org.day)):
            decision = window.hit()
            if not decision.allowed:
                for earlier in (state.app_minute, org.minute, org.day)[:["appminute", "minute", "day"].index(reason)]:
                    earlier.give_back()
                return throttled(reason, decision.retry_after)
        state.calls.append((request.method, path, dict(request.query_params),
                            request.headers.get("if-modified-since")))
        org.in_flight += 1
        try:
            response = await call_next(request)
        finally:
            org.in_flight -= 1
        response.headers.update({"X-MinLimit-Remaining": str(org.minute.remaining()),
                                 "X-DayLimit-Remaining": str(org.day.remaining()),
                                 "X-AppMinLimit-Remaining": str(state.app_minute.remaining())})
        return response

    # ------------------------------------------------------------ identity: OAuth 2

    @app.get("/identity/connect/authorize")
    async def authorize(request: Request):
        query = dict(request.query_params)
        if query.get("client_id") != state.client_id or query.get("response_type") != "code":
            return PlainTextResponse("unauthorized_client", status_code=400)
        scopes = set((query.get("scope") or "").split())
        if not query.get("redirect_uri") or not scopes or not scopes <= SCOPES:
            return PlainTextResponse("invalid_scope", status_code=400)
        code = secrets.token_urlsafe(16)
        state.codes[code] = {"redirect_uri": query["redirect_uri"], "challenge": query.get("code_challenge"),
                             "tenants": list(state.consent), "offline": "offline_access" in scopes}
        back = {"code": code, "scope": query["scope"], **({"state": query["state"]} if "state" in query else {})}
        return RedirectResponse(f"{query['redirect_uri']}?{urlencode(back)}", status_code=302)

    def client_ok(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        try:
            pair = base64.b64decode(header.removeprefix("Basic ")).decode() if header.startswith("Basic ") else ""
        except ValueError:
            return False
        return pair == f"{state.client_id}:{state.client_secret}"

    def issue(grant: str, offline: bool = True) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        state.access[access] = (grant, time.time() + token_lifetime)
        answer = {"id_token": secrets.token_urlsafe(12), "access_token": access, "expires_in": int(token_lifetime),
                  "token_type": "Bearer", "scope": " ".join(sorted(SCOPES))}
        if offline:
            state.refresh[refresh] = grant
            answer["refresh_token"] = refresh
        return answer

    def oauth_error(error: str) -> JSONResponse:
        return JSONResponse({"error": error}, status_code=400)

    @app.post("/connect/token")
    async def token(request: Request):
        if not client_ok(request):
            return oauth_error("invalid_client")
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("grant_type") == "authorization_code":
            found = state.codes.pop(form.get("code", ""), None)
            if found is None or found["redirect_uri"] != form.get("redirect_uri"):
                return oauth_error("invalid_grant")
            if found["challenge"]:
                verifier = form.get("code_verifier") or ""
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if digest != found["challenge"]:
                    return oauth_error("invalid_grant")
            grant, event = str(uuid.uuid4()), str(uuid.uuid4())
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0")
            state.grants[grant] = {"connections": [
                {"id": str(uuid.uuid4()), "authEventId": event, "tenantId": t, "tenantType": "ORGANISATION",
                 "tenantName": tenant(t).name, "createdDateUtc": now, "updatedDateUtc": now}
                for t in found["tenants"]]}
            return issue(grant, found["offline"])
        if form.get("grant_type") == "refresh_token":
            grant = state.refresh.pop(form.get("refresh_token", ""), None)  # (rotated: used once)
            if grant is None:
                return oauth_error("invalid_grant")
            state.refreshes += 1
            return issue(grant)
        return oauth_error("unsupported_grant_type")

    @app.post("/connect/revocation")
    async def revoke(request: Request):
        if not client_ok(request):
            return oauth_error("invalid_client")
        token_ = dict(parse_qsl((await request.body()).decode())).get("token", "")
        grant = state.refresh.pop(token_, None)
        if grant is not None:
            state.revoked.append(token_)
            state.grants[grant]["connections"] = []  # (revoking removes every connection of the grant)
            state.access = {k: v for k, v in state.access.items() if v[0] != grant}
        return Response(status_code=200)

    @app.get("/connections")
    async def connections(request: Request):
        return state.grants[request.state.grant]["connections"]

    @app.delete("/connections/{connection_id}")
    async def disconnect(request: Request, connection_id: str):
        listed = state.grants[request.state.grant]["connections"]
        kept = [c for c in listed if c["id"] != connection_id]
        if len(kept) == len(listed):
            return problem(404, "Not Found", "connection not found")
        state.grants[request.state.grant]["connections"] = kept
        state.removed.append(connection_id)
        return Response(status_code=204)

    # ------------------------------------------------------------ the Accounting API

    def envelope(**body: Any) -> dict[str, Any]:
        return {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": "hub tests",
                "DateTimeUTC": xero_date(int(time.time() * 1000)), **body}

    def not_found() -> Response:
        return PlainTextResponse("The resource you're looking for cannot be found", status_code=404)

    @app.get("/api.xro/2.0/Organisation")
    async def organisation(request: Request):
        org: Tenant = request.state.tenant
        return envelope(Organisations=[{"OrganisationID": org.organisation_id, "Name": org.name,
                                        "LegalName": org.name, "BaseCurrency": "NZD", "CountryCode": "NZ",
                                        "OrganisationType": "COMPANY", "OrganisationStatus": "ACTIVE"}])

    @app.get("/api.xro/2.0/{collection}")
    async def list_(request: Request, collection: str):
        org: Tenant = request.state.tenant
        if collection not in COLLECTIONS:
            return not_found()
        query = request.query_params
        rows = list(org.tables[collection].values())
        if collection == "Contacts" and query.get("includeArchived", "").lower() != "true":
            rows = [r for r in rows if r.get("ContactStatus") != "ARCHIVED"]
        since = request.headers.get("if-modified-since")
        if since:
            try:
                moment = datetime.strptime(since, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
            except ValueError:
                return JSONResponse({"ErrorNumber": 16, "Type": "QueryParseException",
                                     "Message": "If-Modified-Since is not a valid date"}, status_code=400)
            rows = [r for r in rows if r["UpdatedDateUTC"] >= int(moment.timestamp() * 1000)]
        rows.sort(key=_order_key(query.get("order"), COLLECTIONS[collection]))
        body: dict[str, Any] = {}
        if collection in PAGED and "page" in query:
            try:
                page, size = int(query["page"]), min(1000, max(1, int(query.get("pageSize", "100"))))
            except ValueError:
                return JSONResponse({"ErrorNumber": 16, "Type": "QueryParseException",
                                     "Message": "page and pageSize must be numbers"}, status_code=400)
            page = max(1, page)
            if state.pagination:
                body["pagination"] = {"page": page, "pageSize": size, "pageCount": math.ceil(len(rows) / size),
                                      "itemCount": len(rows)}
            rows = rows[(page - 1) * size:page * size]
        return envelope(**body, **{collection: [view(r) for r in rows]})

    @app.get("/api.xro/2.0/{collection}/{record_id}")
    async def get(request: Request, collection: str, record_id: str):
        org: Tenant = request.state.tenant
        row = org.tables.get(collection, {}).get(record_id)
        return envelope(**{collection: [view(row)]}) if row else not_found()

    async def written(request: Request, collection: str, record_id: str | None) -> Response:
        org: Tenant = request.state.tenant
        if collection not in COLLECTIONS or (record_id is not None and record_id not in org.tables[collection]):
            return not_found()
        key = request.headers.get("idempotency-key")
        if key is not None and len(key) > 128:
            return JSONResponse({"ErrorNumber": 10, "Type": "ValidationException", "Message":
                                 "Idempotency-Key must be 128 characters or fewer"}, status_code=400)
        if key is not None and (org.id, key) in state.idempotent:
            status, body = state.idempotent[(org.id, key)]
            return JSONResponse(body, status_code=status)
        try:
            payload = json.loads(await request.body())
            given = payload.get(collection, payload) if isinstance(payload, dict) else None
            given = given if isinstance(given, list) else [given]
            if len(given) != 1 or not isinstance(given[0], dict):
                raise ValueError
        except (ValueError, RecursionError):
            return JSONResponse({"ErrorNumber": 17, "Type": "PostDataInvalidException",
                                 "Message": "Invalid Json data"}, status_code=400)
        try:
            row = org.write(collection, given[0], record_id)
        except Invalid as refused:
            answer = refused.response()
            status, body = 400, json.loads(answer.body)
        else:
            status, body = 200, envelope(**{collection: [{**view(row), "StatusAttributeString": "OK"}]})
        if key is not None:
            state.idempotent[(org.id, key)] = (status, body)
        if state.lose_next > 0:  # applied, but the answer is lost on the way
            state.lose_next -= 1
            return PlainTextResponse("Service Unavailable", status_code=503)
        return JSONResponse(body, status_code=status)

    @app.put("/api.xro/2.0/{collection}")
    async def create(request: Request, collection: str):
        return await written(request, collection, None)

    @app.post("/api.xro/2.0/{collection}/{record_id}")
    async def update(request: Request, collection: str, record_id: str):
        return await written(request, collection, record_id)

    @app.delete("/api.xro/2.0/Items/{record_id}")
    async def delete_item(request: Request, record_id: str):
        org: Tenant = request.state.tenant
        if org.tables["Items"].pop(record_id, None) is None:
            return not_found()
        return Response(status_code=204)

    return app


# ---------------------------------------------------------------- helpers for tests


def seed(app: FastAPI, entity: str, count: int, tenant: str = TENANT, ago: float = 0) -> list[str] | None:
    """Create ``count`` records of ``entity`` in the organisation, last changed
    ``ago`` seconds ago (a millisecond apart) or now; their ids."""
    org: Tenant = app.state.tenant(tenant)
    then = int((time.time() - ago) * 1000)
    ids = []
    for i in range(count):
        ms = then + i if ago else None
        tag = uuid.uuid4().hex[:8]
        if entity == "contacts":
            row = org.write("Contacts", {"Name": f"Seed contact {tag}", "EmailAddress": f"{tag}@example.com"}, ms=ms)
        elif entity == "invoices":
            row = org.write("Invoices", {"Type": "ACCREC", "Contact": {"Name": "Opening Customer"}, "Reference": tag,
                                         "LineItems": [{"Description": "Seeded", "Quantity": 2, "UnitAmount": 10}]},
                            ms=ms)
        elif entity == "items":
            row = org.write("Items", {"Code": f"SEED-{tag}", "Name": f"Seed item {tag}",
                                      "SalesDetails": {"UnitPrice": 10.0, "AccountCode": "200"}}, ms=ms)
        elif entity == "accounts":
            row = org.write("Accounts", {"Code": f"6{tag[:4]}", "Name": f"Seed expense {tag}", "Type": "EXPENSE"},
                            ms=ms)
        elif entity == "payments":
            row = org.write("Payments", {"Invoice": {"InvoiceID": OPEN_INVOICE}, "Account": {"Code": BANK_CODE},
                                         "Amount": 1.0, "Reference": tag}, ms=ms)
        else:
            return None
        ids.append(row[next(v for k, v in COLLECTIONS.items() if k.lower() == entity)])
    return ids


def touch(app: FastAPI, entity: str, record_id: str, tenant: str = TENANT, **change: Any) -> None:
    """Change a record in Xero (as its users would): its UpdatedDateUTC moves on."""
    collection = next(k for k in COLLECTIONS if k.lower() == entity)
    app.state.tenant(tenant).write(collection, change, record_id)


def expire_tokens(app: FastAPI) -> None:
    """Every access token the fake issued stops working (its refresh tokens still do)."""
    app.state.access = {token: (grant, 0.0) for token, (grant, _) in app.state.access.items()}


# ---------------------------------------------------------------- webhooks


def sign(body: bytes, key: str = WEBHOOK_KEY) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def event(category: str, resource_id: str, tenant: str = TENANT, event_type: str = "UPDATE",
          when: str | None = None) -> dict[str, Any]:
    """One event as Xero delivers it (it names the record, never carries it)."""
    resource = {"CONTACT": "Contacts", "INVOICE": "Invoices"}.get(category, category.title())
    return {"resourceUrl": f"https://api.xero.com/api.xro/2.0/{resource}/{resource_id}", "resourceId": resource_id,
            "eventDateUtc": when or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
            "eventType": event_type, "eventCategory": category, "tenantId": tenant, "tenantType": "ORGANISATION"}


_sequence = iter(range(1, 10**9))


def delivery(events: list[dict[str, Any]], key: str = WEBHOOK_KEY) -> tuple[dict[str, str], bytes]:
    """``(headers, body)`` of a delivery signed with ``key``."""
    first = next(_sequence)
    body = json.dumps({"events": events, "firstEventSequence": first, "lastEventSequence": first + max(0, len(
        events) - 1), "entropy": secrets.token_hex(10).upper()}).encode()
    return {"Content-Type": "application/json", "x-xero-signature": sign(body, key)}, body


def intent_to_receive(key: str = WEBHOOK_KEY) -> tuple[dict[str, str], bytes]:
    """Xero's check of a webhook URL: a signed delivery of no events (sent
    signed right, and signed wrong: it expects 200 and 401)."""
    return delivery([], key)


def conformance_webhook(harness: Any, kind: str) -> tuple[dict[str, str], bytes] | None:
    """A signed delivery of a change of a new contact of the suite's tenant;
    none ``stale``: Xero signs no time."""
    if kind == "stale":
        return None
    tenant = harness.connection.get("provider_account") or TENANT
    return delivery([event("CONTACT", str(uuid.uuid4()), tenant)])
