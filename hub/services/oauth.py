"""OAuth 2 authorization-code flow with single-use, expiring, bound state and PKCE."""

from __future__ import annotations

import asyncio
import logging
import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa
from sqlmodel import select

from hub.crypto import DecryptionError, hash_token
from hub.models import Connection, OAuthState, PendingRevocation, utcnow
from hub.plugins import Provider
from hub.runtime import Hub
from hub.services.connections import (Reached, account_reached, may_give_back, revoke_unsaved,
                                      upsert_from_credentials)
from hub.types import Credentials, HubError, InsufficientScope, ValidationFailed

log = logging.getLogger("hub.oauth")


class OAuthFailed(HubError):
    """The callback cannot complete; ``code`` is stable and safe to put in a URL.
    ``provider_details``: what the plugin's error said beyond its message (Xero's
    organisations to choose from), for the callback's JSON answer only."""

    status = 400
    provider_details: Any = None
    #: In redirect mode, the ``flow`` under which the refusal's details are kept for the
    #: organization's app to read (``GET /oauth/{provider}/flows/{flow}``): a URL carries no list.
    flow: str | None = None


def callback_url(hub: Hub, provider: str) -> str:
    return f"{hub.settings.public_url.rstrip('/')}/api/v1/integrations/oauth/{provider}/callback"


#: Hosts a redirect_uri may always name: the tenant's app in development.
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def return_hosts(hub: Hub) -> frozenset[str] | None:
    """The hosts an OAuth ``redirect_uri`` may name; ``None``: any.

    ``HUB_OAUTH_RETURN_HOSTS`` lists them (``*``: any host, an open redirect
    for whoever holds an API key). Unset, only the hub's own host
    (``HUB_PUBLIC_URL``) and loopback hosts are accepted: the hub's callback
    must not send a user's browser wherever a tenant's request says.
    """
    listed = {h.strip().lower().strip("[]") for h in hub.settings.oauth_return_hosts.split(",") if h.strip()}
    if "*" in listed:
        return None
    if listed:
        return frozenset(listed)
    own = (urlsplit(hub.settings.public_url).hostname or "").lower()
    return _LOOPBACK_HOSTS | ({own} if own else set())


def _check_return_url(hub: Hub, url: str | None) -> None:
    """An absolute http(s) URL on one of :func:`return_hosts` (the hub's
    callback redirects the user's browser there)."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()  # an unbalanced "[::1" fails here
        if parts.port == 0:  # (a port beyond 65535, or not a number, fails here: no browser follows it)
            raise ValueError
    except ValueError:
        raise ValidationFailed("redirect_uri is not a valid URL", code="invalid_redirect_uri") from None
    # Read otherwise by browsers than by urlsplit ("http://evil.com\\@host/": a browser's host
    # is evil.com): refused rather than left to how the redirect is quoted.
    if "\\" in url or "@" in parts.netloc or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValidationFailed("redirect_uri must not hold a backslash, a user name (@), spaces or control "
                               "characters", code="invalid_redirect_uri")
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationFailed("redirect_uri must be an absolute http(s) URL", code="invalid_redirect_uri")
    if "#" in url:
        # (The outcome goes in the query: after a fragment it would be in the fragment, which the app's
        # server never receives.)
        raise ValidationFailed("redirect_uri must not have a #fragment: the outcome is added to its query",
                               code="invalid_redirect_uri")
    allowed = return_hosts(hub)
    if allowed is None or host in allowed:
        return
    if hub.settings.oauth_return_hosts.strip():
        raise ValidationFailed(f"redirect_uri must be on one of the hosts HUB_OAUTH_RETURN_HOSTS lists "
                               f"({', '.join(sorted(allowed))})", code="invalid_redirect_uri")
    raise ValidationFailed(f"redirect_uri must be on the hub's own host or a loopback host "
                           f"({', '.join(sorted(allowed))}); the operator lists the hosts of the apps it may "
                           f"return to in HUB_OAUTH_RETURN_HOSTS", code="invalid_redirect_uri")


async def start(hub: Hub, organization_id: str, provider: Provider, return_to: str | None,
                params: dict[str, str], bind: bool = False) -> tuple[str, str | None]:
    """Create the state; return the provider's authorization URL and, for a
    flow bound to the browser that starts it (``bind``), its binding.

    ``return_to`` is where the user's browser is sent once the callback is done
    (with ``status``, ``connection_id`` or a stable error ``code``). A bound
    flow connects nothing at the callback: it keeps the grant until the
    tenant's app confirms it (:func:`confirm`) with the binding it kept in
    the session of the user who started it, so that a user sent the
    authorization URL by someone else connects nothing to their organization.
    """
    if provider.info.auth_type != "oauth2":
        raise ValidationFailed(f"{provider.name} does not use OAuth", code="wrong_auth_type")
    _check_return_url(hub, return_to)
    if bind and not return_to:
        # The flow comes back to the app's page, where the user who started it confirms.
        raise ValidationFailed("confirm=true needs a redirect_uri: the page of your app the user comes back to, "
                               "which confirms the flow from that user's session", code="invalid_redirect_uri",
                               fields=["redirect_uri"])
    # Only what the provider declares as configuration the user gives (shop) becomes the
    # connection's config: a readonly field is the authorization's to set (Salesforce's
    # instance_url, the host its tokens go to), never the client's.
    declared = {f.name for f in provider.info.config_fields if not f.readonly}
    params = {k: v for k, v in params.items() if k in declared}
    state = secrets.token_urlsafe(32)
    verifier = challenge = None
    if provider.info.supports_pkce:
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = callback_url(hub, provider.name)
    ctx = hub.app_context(provider, params)
    url = await hub.call(provider, "authorization_url", ctx, redirect_uri=redirect_uri, state=state,
                         code_challenge=challenge, params=params)
    binding = secrets.token_urlsafe(32) if bind else None
    await asyncio.to_thread(_save_state, hub, OAuthState(
        state_hash=hash_token(state), organization_id=organization_id, provider=provider.name,
        redirect_uri=redirect_uri, return_to=return_to, params=params,
        code_verifier_encrypted=hub.cipher.encrypt(verifier) if verifier else None,
        expires_at=utcnow() + timedelta(seconds=hub.settings.oauth_state_ttl_seconds),
        binding_hash=hash_token(binding) if binding else None,
    ))
    return url, binding


def _save_state(hub: Hub, state: OAuthState) -> None:
    with hub.session() as session:
        session.add(state)
        session.commit()


def _consume_state(hub: Hub, provider: Provider, state: str) -> OAuthState:
    """Mark the state used (exactly once) and return it."""
    state_hash = hash_token(state)
    now = utcnow()
    with hub.session() as session:
        claimed = session.execute(
            sa.update(OAuthState)
            .where(OAuthState.state_hash == state_hash, OAuthState.used_at.is_(None))
            .values(used_at=now)
        )
        session.commit()
        record = session.get(OAuthState, state_hash)
    if record is None or (record.params or {}).get(_LINK):
        raise OAuthFailed("unknown OAuth state", code="invalid_state")
    # A used or expired state redirects nowhere: its callback URL must not stay a
    # redirect to the return URL for ever (anyone could follow it).
    if claimed.rowcount != 1:
        raise OAuthFailed("this OAuth state was already used", code="state_used")
    if record.provider != provider.name:
        raise OAuthFailed("OAuth state belongs to another provider", code="invalid_state")
    if record.expires_at < now:
        raise OAuthFailed("OAuth state expired; start again", code="state_expired")
    return record


#: How long a link token counts when its provider gives no expiration (Plaid's last 4 hours).
LINK_TOKEN_TTL = timedelta(hours=4)
_LINK = "link_token"
#: Where a refused callback's details are kept in its state's params (see :func:`_keep_refusal`).
_REFUSAL = "_refusal"


def remember_link_token(hub: Hub, organization_id: str, provider: Provider, link_token: str,
                        expiration: Any, connection_id: str | None = None) -> None:
    """Note that ``link_token`` was created for this organization, until it
    expires, and for which connection when it repairs one (update mode).

    Kept (hashed) beside the OAuth states, marked as a link token: the
    exchange checks it, and the OAuth callback never takes it for a state.
    """
    now = utcnow()
    expires_at = now + LINK_TOKEN_TTL
    if isinstance(expiration, str):
        try:
            given = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
            expires_at = min(now + timedelta(days=1), given if given.tzinfo else given.replace(tzinfo=timezone.utc))
        except ValueError:
            pass
    with hub.session() as session:
        session.merge(OAuthState(state_hash=hash_token(link_token), organization_id=organization_id,
                                 provider=provider.name, redirect_uri="",
                                 params={_LINK: True, "connection_id": connection_id},
                                 expires_at=expires_at))
        session.commit()


def check_link_token(hub: Hub, organization_id: str, provider: Provider, link_token: str) -> str | None:
    """Refuse a link token this organization did not create with the hub (or
    one expired): an exchange must name the token its widget ran with.

    :returns: the connection the token repairs (update mode), or None.
    :raises ValidationFailed: ``invalid_link_token`` (422).
    """
    with hub.session() as session:
        record = session.get(OAuthState, hash_token(link_token))
    if (record is None or not (record.params or {}).get(_LINK) or record.provider != provider.name
            or record.organization_id != organization_id):
        raise ValidationFailed(f"the link_token is not one the hub created for this organization: create one "
                               f"with POST /link/{provider.name}/token", code="invalid_link_token")
    if record.expires_at < utcnow():
        raise ValidationFailed(f"the link_token expired: create another with POST /link/{provider.name}/token",
                               code="invalid_link_token")
    return (record.params or {}).get("connection_id")


def purge_states(hub: Hub, before: Any) -> int:
    """Forget OAuth states that expired before ``before``. A grant a bound
    flow kept and nobody confirmed is given back: it becomes a pending
    revocation, which the scheduler carries out (unless a connection uses
    its account by then)."""
    with hub.session() as session:
        unclaimed = session.exec(select(OAuthState).where(
            OAuthState.expires_at < before, OAuthState.grant_encrypted.is_not(None),
            OAuthState.confirmed_at.is_(None))).all()
        for record in unclaimed:
            try:
                credentials, reached = _grant_of(hub, record.grant_encrypted)
            except DecryptionError:
                log.warning("an unconfirmed %s authorization cannot be given back: the key that kept it is gone",
                            record.provider)
                continue
            if not may_give_back(hub, record.provider, credentials, reached):
                continue
            claimed = session.execute(sa.update(OAuthState).where(
                OAuthState.state_hash == record.state_hash, OAuthState.grant_encrypted.is_not(None),
                OAuthState.confirmed_at.is_(None)).values(grant_encrypted=None))
            if claimed.rowcount != 1:
                continue  # (another scheduler's purge took it meanwhile)
            session.add(PendingRevocation(
                connection_id=f"flow-{record.state_hash[:27]}", organization_id=record.organization_id,
                provider=record.provider, webhook_key=credentials.webhook_key, config=dict(credentials.config),
                credentials_encrypted=hub.cipher.encrypt_json(credentials.secrets),
                token_expires_at=credentials.expires_at, last_error="an authorization nobody confirmed",
                attempts=0, next_attempt_at=utcnow()))
        purged = session.execute(sa.delete(OAuthState).where(OAuthState.expires_at < before)).rowcount or 0
        session.commit()
    return purged


async def finish(hub: Hub, provider: Provider, query: dict[str, str]) -> tuple[OAuthState, Connection | str]:
    """Handle the provider's redirect: check state, exchange the code, save
    tokens: the state and the connection; for a bound flow, the state and the
    ``flow`` to confirm (the tokens kept until then).

    :raises OAuthFailed: with a stable code; ``details`` carries the return URL
        when one is known, so the API can redirect there.
    """
    state = query.get("state")
    if not state:
        raise OAuthFailed("the callback has no state", code="missing_state")
    record = await asyncio.to_thread(_consume_state, hub, provider, state)
    if query.get("error"):
        # Never reflect the provider's error text: it is attacker-controllable.
        raise OAuthFailed("the user or the provider declined the authorization",
                          code="access_denied", details=record.return_to)
    code = query.get("code")
    if not code:
        raise OAuthFailed("the callback has no code", code="missing_code", details=record.return_to)
    verifier = hub.cipher.decrypt(record.code_verifier_encrypted) if record.code_verifier_encrypted else None
    ctx = hub.app_context(provider, record.params)
    try:
        credentials = await hub.call(provider, "exchange_code", ctx, code=code, redirect_uri=record.redirect_uri,
                                     code_verifier=verifier, params=dict(query))
    except HubError as exc:
        # Refused after the provider issued tokens (too few scopes, no account chosen): the
        # grant is given back, unless another connection uses the account.
        granted = getattr(exc, "credentials", None)
        if isinstance(granted, Credentials):
            await revoke_unsaved(hub, provider, granted)
        if isinstance(exc, InsufficientScope):
            raise OAuthFailed(exc.message, code=exc.code, details=record.return_to) from None
        # A code of the plugin's own (Shopify's shop_mismatch) says more than exchange_failed.
        specific = exc.code if exc.code != type(exc).code else "exchange_failed"
        failed = OAuthFailed(exc.message, code=specific, details=record.return_to)
        failed.provider_details = exc.details if isinstance(exc.details, (dict, list)) else None
        if failed.provider_details is not None and record.return_to:
            failed.flow = secrets.token_urlsafe(24)
            await asyncio.to_thread(_keep_refusal, hub, record, failed.flow, failed)
        raise failed from None
    credentials.config = {**record.params, **credentials.config}
    reached = await account_reached(hub, record.organization_id, provider, credentials)
    if record.binding_hash:
        flow = secrets.token_urlsafe(24)
        await asyncio.to_thread(_keep_grant, hub, record, flow, credentials, reached)
        return record, flow
    try:
        connection = await asyncio.to_thread(upsert_from_credentials, hub, record.organization_id, provider,
                                             credentials, reached=reached)
    except HubError as exc:
        await revoke_unsaved(hub, provider, credentials, reached)
        raise OAuthFailed(exc.message, code=exc.code, details=record.return_to) from None
    return record, connection


def _keep_grant(hub: Hub, record: OAuthState, flow: str, credentials: Credentials, reached: Reached) -> None:
    """Keep a bound flow's grant, encrypted, for the confirmation window, under ``flow``."""
    grant = {"secrets": credentials.secrets, "config": credentials.config, "webhook_key": credentials.webhook_key,
             "expires_at": credentials.expires_at.isoformat() if credentials.expires_at else None,
             "refresh_expires_at": credentials.refresh_expires_at.isoformat()
             if credentials.refresh_expires_at else None,
             "account": reached.account,
             "failure": [reached.failure.code, reached.failure.message] if reached.failure else None}
    with hub.session() as session:
        session.execute(sa.update(OAuthState).where(OAuthState.state_hash == record.state_hash).values(
            grant_encrypted=hub.cipher.encrypt_json(grant), flow_hash=hash_token(flow),
            expires_at=utcnow() + timedelta(seconds=hub.settings.oauth_state_ttl_seconds)))
        session.commit()


def _keep_refusal(hub: Hub, record: OAuthState, flow: str, failed: OAuthFailed) -> None:
    """Keep what a refused callback's plugin said (Xero's organisations to
    choose from), under ``flow``, for the confirmation window: the app reads
    it with :func:`refusal`, as its redirect carries only the code."""
    refusal = {"code": failed.code, "error": failed.message, "details": failed.provider_details}
    with hub.session() as session:
        session.execute(sa.update(OAuthState).where(OAuthState.state_hash == record.state_hash).values(
            params={**(record.params or {}), _REFUSAL: refusal}, flow_hash=hash_token(flow),
            expires_at=utcnow() + timedelta(seconds=hub.settings.oauth_state_ttl_seconds)))
        session.commit()


def refusal(hub: Hub, organization_id: str, provider: Provider, flow: str) -> dict[str, Any]:
    """What the plugin said of a refused authorization whose redirect carried
    ``flow``: its ``code``, ``error`` and ``details``.

    :raises FlowNotFound: no refused flow ``flow`` of this organization and
        provider (unknown, another's, or its window past).
    """
    with hub.session() as session:
        record = session.exec(select(OAuthState).where(OAuthState.flow_hash == hash_token(flow))).first()
    kept = (record.params or {}).get(_REFUSAL) if record is not None else None
    if (kept is None or record.organization_id != organization_id or record.provider != provider.name
            or record.expires_at < utcnow()):
        raise FlowNotFound(f"no refused {provider.name} authorization of this organization is known as this flow "
                           f"(unknown, or more than {hub.settings.oauth_state_ttl_seconds} s old)")
    return kept


def _grant_of(hub: Hub, encrypted: str) -> tuple[Credentials, Reached]:
    grant = hub.cipher.decrypt_json(encrypted)
    expires_at, refresh_expires_at = (datetime.fromisoformat(grant[key]) if grant.get(key) else None
                                      for key in ("expires_at", "refresh_expires_at"))
    failure = HubError(grant["failure"][1], code=grant["failure"][0]) if grant.get("failure") else None
    return (Credentials(secrets=grant["secrets"], config=grant.get("config") or {},
                        webhook_key=grant.get("webhook_key"), expires_at=expires_at,
                        refresh_expires_at=refresh_expires_at),
            Reached(account=grant.get("account"), failure=failure))


class FlowNotFound(HubError):
    code = "oauth_flow_not_found"
    status = 404


class BindingMismatch(HubError):
    code = "binding_mismatch"
    status = 403


async def confirm(hub: Hub, organization_id: str, provider: Provider, flow: str, binding: str) -> Connection:
    """Connect the grant a bound flow's callback kept, when ``binding`` is the
    one its start handed out. Once only: a wrong binding (the user who
    finished is not the one who started) gives the grant back.

    :raises FlowNotFound: no flow ``flow`` of this organization and provider
        awaits confirmation (unknown, confirmed already, or expired).
    :raises BindingMismatch: the binding is not the flow's.
    """
    # Once claimed, the grant is this call's alone: settled (connected or given back) even when
    # the request is cancelled meanwhile, or nothing would ever hold or revoke it.
    return await asyncio.shield(_confirm(hub, organization_id, provider, flow, binding))


async def _confirm(hub: Hub, organization_id: str, provider: Provider, flow: str, binding: str) -> Connection:
    claimed = await asyncio.to_thread(_claim_flow, hub, organization_id, provider, flow, binding)
    if claimed is None:
        raise FlowNotFound(f"no {provider.name} authorization of this organization awaits confirmation as this "
                           f"flow (confirmed already, not confirmed within {hub.settings.oauth_state_ttl_seconds} s "
                           f"of its callback, or unknown): start again")
    credentials, reached, matches = claimed
    if not matches:
        # Finished in another browser than the one that started: nobody here may hold it.
        await revoke_unsaved(hub, provider, credentials, reached)
        raise BindingMismatch("the binding is not the one this authorization was started with: the user who "
                              "authorized is not the one who started it, so nothing was connected")
    if reached.failure is not None:
        reached = await account_reached(hub, organization_id, provider, credentials)  # (it may answer now)
    try:
        return await asyncio.to_thread(upsert_from_credentials, hub, organization_id, provider, credentials,
                                       reached=reached)
    except HubError:
        await revoke_unsaved(hub, provider, credentials, reached)
        raise


def _claim_flow(hub: Hub, organization_id: str, provider: Provider, flow: str,
                binding: str) -> tuple[Credentials, Reached, bool] | None:
    """Take the grant a bound flow kept (once): with whether ``binding`` is its
    binding; None when no such flow of this organization awaits confirmation."""
    now = utcnow()
    with hub.session() as session:
        record = session.exec(select(OAuthState).where(OAuthState.flow_hash == hash_token(flow))).first()
        if (record is None or record.organization_id != organization_id or record.provider != provider.name
                or not record.grant_encrypted or record.confirmed_at is not None or record.expires_at < now):
            return None
        try:
            credentials, reached = _grant_of(hub, record.grant_encrypted)
        except DecryptionError:
            return None  # (the key that kept it is gone)
        matches = hmac.compare_digest(hash_token(binding), record.binding_hash or "")
        claimed = session.execute(
            sa.update(OAuthState).where(OAuthState.state_hash == record.state_hash, OAuthState.confirmed_at.is_(None))
            .values(confirmed_at=now, grant_encrypted=None))
        session.commit()
    return (credentials, reached, matches) if claimed.rowcount == 1 else None


def return_url(base: str, **values: Any) -> str:
    separator = "&" if urlsplit(base).query else "?"
    return base + separator + urlencode({k: v for k, v in values.items() if v is not None})
