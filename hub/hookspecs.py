"""The plugin contract: every hook a provider plugin may implement.

A provider plugin is a module of ``@hub.hookimpl`` functions registered under
the entry point group ``hub.providers``. The core calls each provider hook on
exactly one provider (the one the connection or URL names), so a plugin never
checks which provider it is. Hooks may be ``async def``; the core awaits them.

Most hooks receive ``ctx``, a :class:`hub.context.ProviderContext` carrying the
connection's config, its decrypted credentials, the operator's settings for the
provider and ``ctx.http``, the connection's pooled HTTP client. The client
already applies auth, rate limits, retries with backoff and the mapping of
provider errors to hub errors: a plugin describes endpoints and shapes, it
does not build clients, sleep, or retry.

Every provider hook is ``firstresult``: the first non-``None`` result is the
answer. pluggy calls hooks with keyword arguments, so an implementation may
accept only the arguments it uses.

Errors a hook may raise are those of :mod:`hub.types` (``AuthFailed``,
``NotFound``, ``ValidationFailed``, ``ReadOnly``, ``RateLimited``,
``ProviderUnavailable``, ``ProviderError``, ``ConfigurationError``,
``WebhookRejected``). Errors raised by ``ctx.http`` are already of those types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from datetime import datetime

    import httpx

    from hub.context import ProviderContext
    from hub.types import (
        Action,
        Credentials,
        EntitySchema,
        ErrorDescription,
        HubError,
        Page,
        ProviderInfo,
        RequestAuth,
        WebhookEvent,
        WebhookRequest,
    )

hookspec = pluggy.HookspecMarker("hub")


# ---------------------------------------------------------------------------
# schema: what the provider is and which entities it has
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def provider_info() -> ProviderInfo:
    """Describe the provider.

    Called once at load time. The returned :class:`~hub.types.ProviderInfo`
    ``name`` must equal the plugin's entry point name; it is the provider id
    used in every URL. Declares the category, auth type, URL templates, rate
    limit, OAuth scopes and the config and credential fields a connection needs.

    :returns: the provider's :class:`~hub.types.ProviderInfo`. Required.
    """


@hookspec(firstresult=True)
def entity_schemas() -> list[EntitySchema]:
    """List the entities the provider exposes, with their fields.

    Called once at load time. Each :class:`~hub.types.EntitySchema` names the
    entity, its fields (name, label, type, required, readonly), the id field,
    the modification-time field, and whether create, update, delete and
    modified-since filtering are supported. The core refuses writes the flags
    do not allow before the CRUD hooks are called.

    :returns: a list of :class:`~hub.types.EntitySchema`. Required.
    """


@hookspec(firstresult=True)
def account_fields(ctx: ProviderContext, entity: str) -> list[str]:
    """List the fields the connection's account adds to ``entity``.

    For an entity whose schema declares ``custom_fields`` (a pattern of the
    paths an account may add: HubSpot's ``properties.<name>``, Salesforce's
    ``<Name>__c``), the paths, as a mapping names them, of the fields this
    account has: the core refuses a sync mapping naming another when it is
    saved (``unknown_field``), instead of a push failing on it later. Called
    when a mapping being saved names such a path, not otherwise. Optional:
    without it, any path the pattern matches is taken.

    :returns: the paths (a list of text); may be empty. None: the account
        cannot tell (its grant may not list them), and any path the pattern
        matches is taken.
    """


@hookspec(firstresult=True)
def provider_actions() -> list[Action]:
    """List provider-specific operations beyond CRUD.

    Examples: confirm a Stripe payment intent, adjust Shopify inventory,
    look up a Plaid institution. Each :class:`~hub.types.Action` has a name,
    a label, a description and its parameter fields. The API exposes them at
    ``POST /connections/{id}/actions/{action}``.

    :returns: a list of :class:`~hub.types.Action`, or ``None`` for none.
    """


# ---------------------------------------------------------------------------
# auth: connecting and staying connected
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def authorization_url(
    ctx: ProviderContext,
    redirect_uri: str,
    state: str,
    code_challenge: str | None,
    params: dict[str, str],
) -> str:
    """Build the URL that starts an OAuth 2 authorization.

    :param ctx: context with the operator's settings (``client_id``) and the
        connection config given so far (``params`` validated, e.g. ``shop``);
        ``ctx.credentials`` is empty.
    :param redirect_uri: where the provider sends the user back (the hub's
        callback); must be passed unchanged.
    :param state: the opaque, single-use state the core generated; must be
        passed unchanged.
    :param code_challenge: the S256 PKCE challenge when the provider declares
        ``supports_pkce``, else ``None``.
    :param params: the query parameters the client sent that the provider
        declares in ``ProviderInfo.config_fields`` (``shop`` for Shopify);
        others are dropped. Validate them and raise ``ValidationFailed`` when bad.
        The hook may put a value in its canonical form in place (Shopify
        lower-cases the shop and drops a scheme): what ``params`` holds when
        it returns becomes the connection's config.
    :returns: the absolute authorization URL.
    :raises ValidationFailed: a parameter is missing or malformed.
    :raises ConfigurationError: the operator did not configure the OAuth app.
    """


@hookspec(firstresult=True)
def exchange_code(
    ctx: ProviderContext,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
    params: dict[str, str],
) -> Credentials:
    """Exchange an OAuth authorization code for tokens.

    :param code: the ``code`` of the callback.
    :param redirect_uri: the redirect URI used in the authorization request.
    :param code_verifier: the PKCE verifier, when PKCE was used.
    :param params: every query parameter of the callback, so the plugin can
        verify provider signatures on it (Shopify's ``hmac``) and read
        provider-specific values (``shop``, ``realmId``).
    :returns: :class:`~hub.types.Credentials` with the tokens in ``secrets``,
        ``expires_at`` when the token expires, non-secret ``config`` (shop
        domain) and the ``webhook_key`` deliveries will carry.
    :raises AuthFailed: the provider refused the code, or the callback's
        signature is wrong.
    :raises InsufficientScope: the grant lacks scopes the provider needs
        (with its ``credentials``: the core gives the grant back). Raise any
        other hub error once the provider issued tokens (the user must
        choose one of several accounts, say) with them set as its
        ``credentials`` attribute (``exc.credentials = credentials``), so
        the core gives the grant back too (unless a connection uses its
        account).
    """


@hookspec(firstresult=True)
def refresh_credentials(ctx: ProviderContext) -> Credentials:
    """Refresh an expiring access token.

    Called by the core before the expiry the last credentials gave
    (``Credentials.expires_at``, kept as the connection's ``token_expires_at``)
    passes, and once after a 401 when the credentials hold a
    ``refresh_token``, under a per-connection lock so that concurrent calls
    refresh once. The core saves the result atomically, including a rotated
    refresh token. Its grant upkeep also calls it, with no call to the
    provider waiting, for a connection whose grant would otherwise lapse:
    one whose ``Credentials.refresh_expires_at`` is within
    ``HUB_GRANT_RENEWAL_DAYS``, and, for a provider declaring
    ``ProviderInfo.lasting_tokens_until``, one holding a token that never
    expires and no ``refresh_token``: exchange it for an expiring grant
    (Shopify's token exchange), or return ``Credentials(secrets={})`` to
    keep it as it is (nothing is written; each hub process asks again about
    a day later). (A grant no connection stores, one
    the core is giving back, has ``ctx.connection_id`` None and is
    refreshed in memory.)

    :returns: the new :class:`~hub.types.Credentials`; its ``secrets`` are
        merged over the old ones (a key it leaves out, such as a refresh
        token the provider did not rotate, keeps its value), and its
        ``config`` over the connection's (what the token answer says of it:
        Salesforce's ``instance_url``, the API host, which may move: the
        call a 401 had refreshed is sent again to the URL as the new config
        makes it; a value left ``None`` or empty is ignored). A ``refresh_expires_at`` left
        ``None`` keeps the stored one, unless the refresh token rotated.
    :raises AuthFailed: the refresh token was refused; the core marks the
        connection ``expired``. The token endpoint's own refusal through
        ``ctx.http`` (a 400 ``invalid_grant``, a 401, 403 or 404) counts as
        that already: let it propagate; a passing failure (a 5xx, a 429)
        leaves the connection as it is, to be refreshed again later. If the
        provider refuses the account rather than the grant (Shopify's frozen
        or locked shop, a 402 or 423), raise ``AuthFailed(...,
        account_refused=True)``, or return it from ``describe_error``: the
        connection is then marked ``error`` with the reason, and its grant is
        kept and tried at the next refresh. Elsewhere the flag changes nothing.
    """


@hookspec(firstresult=True)
def request_auth(ctx: ProviderContext) -> RequestAuth:
    """Say how to authenticate one HTTP request to the provider.

    Called by ``ctx.http`` for every request (cheap, no I/O). Read the secrets
    from ``ctx.credentials`` and the operator settings from ``ctx.settings``.
    Also called before a connection exists (code exchange, Link token), when
    ``ctx.credentials`` is empty: return only what applies then.

    :returns: a :class:`~hub.types.RequestAuth` with headers and query
        parameters to add (``Authorization: Bearer …``,
        ``X-Shopify-Access-Token``, ``PLAID-SECRET``).
    """


@hookspec(firstresult=True)
def test_connection(ctx: ProviderContext) -> dict[str, Any]:
    """Check that the connection's credentials work with one cheap call (or
    two: the account's id may need its own).

    :returns: a small, non-secret description of what the credentials reach
        (account name, shop, institution), shown to the user. Its
        ``account``, when the provider can tell, is the stable id of the
        provider-side account (and data set) the credentials reach: Stripe's
        account id and mode, Shopify's shop domain, Plaid's item id; not a
        name its owner can change. The core keeps it on the connection and
        refuses new credentials or configuration reaching another account
        while the connection holds its records (``account_mismatch``): they
        would be taken for deleted, and waiting changes pushed to the other.
        Leave it out when the credentials cannot tell (a key without the
        permission to read the account): the core then refuses them for a
        connection that knows its account and holds records
        (``account_unverifiable``), so tell it whenever the provider can.
        The core also calls it on the credentials of a new OAuth grant or
        Link exchange: connecting again to another account than the
        organization's connection has is refused (``connection_exists``),
        also for a provider that sets no ``webhook_key``.
    :raises AuthFailed: the credentials are refused.
    """


@hookspec(firstresult=True)
def create_link_token(
    ctx: ProviderContext, user_id: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Start a Link-style flow (Plaid Link): create a short-lived token for the
    provider's client-side widget.

    To repair a connection (the client names it: the user must log in to the
    bank again, Plaid's ``ITEM_LOGIN_REQUIRED``), ``ctx`` is that connection's
    context, with its credentials: make a token of the provider's update mode
    (Plaid: with the item's ``access_token``, without ``products``). The core
    then exchanges nothing afterwards: it tests the connection and marks it
    connected again. Otherwise ``ctx`` has no connection and no credentials.

    :param user_id: a stable id of the end user in the tenant's app.
    :param options: client options (``products``, ``country_codes``,
        ``language``, ``webhook``, ``redirect_uri``).
    :returns: ``{"link_token": ..., "expiration": ...}``.
    """


@hookspec(firstresult=True)
def exchange_public_token(
    ctx: ProviderContext, public_token: str, metadata: dict[str, Any], link_token: str
) -> Credentials:
    """Finish a Link-style flow: exchange the widget's public token for a
    long-lived access token.

    :param public_token: the token the widget returned.
    :param metadata: what the widget reported (institution, accounts).
    :param link_token: the token of :func:`create_link_token` the widget ran
        with; the core has checked that it is this organization's. Check
        that ``public_token`` came from it (Plaid's ``/link/token/get``)
        before exchanging: the provider's client secret is the hub's, shared
        by every tenant, so another organization's leaked public token would
        otherwise connect its account here.
    :returns: :class:`~hub.types.Credentials`; its ``webhook_key`` (Plaid's
        ``item_id``) routes later webhooks to the new connection.
    :raises AuthFailed: the public token is invalid or expired.
    """


@hookspec(firstresult=True)
def disconnect(ctx: ProviderContext) -> bool:
    """Revoke the connection at the provider when the hub deletes it
    (Plaid's ``/item/remove``, Shopify's app uninstall; called after the
    connection's rows are gone), or to give back a grant that could not be
    saved as a connection (``ctx.connection_id`` is then ``None``). Optional;
    failures are logged, not raised to the user.

    ``ctx.extra["account_shared"]`` is ``True`` when another connection of
    the provider (in any organization) still has the same ``webhook_key``:
    the same shop or item connected twice. Then revoke only what is this
    connection's own (Stripe's webhook endpoint for it), not the shared grant.

    :returns: ``True`` when something was revoked.
    """


# ---------------------------------------------------------------------------
# CRUD: records of an entity
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def list_records(
    ctx: ProviderContext,
    entity: str,
    cursor: str | None,
    page_size: int,
    filters: dict[str, str],
    since: datetime | None,
) -> Page:
    """Fetch one page of an entity's records.

    :param entity: one of the names from ``entity_schemas``.
    :param cursor: ``None`` for the first page, else a ``next_cursor`` this
        hook returned before, unchanged: the API hands cursors to clients
        sealed (encrypted and authenticated, bound to the connection and the
        entity), so a client can neither read nor forge one; a cursor stored
        from before a secret key change is refused (``invalid_cursor``)
        unless the old key is still ``HUB_PREVIOUS_SECRET_KEY``.
    :param page_size: the number of records wanted (the plugin may clamp it to
        the provider's maximum).
    :param filters: provider-specific filters the client passed (the query
        parameters of the records API other than its own). An implementation
        that does not name ``filters`` takes none: the core refuses a list
        asked with some (``filters_not_supported``) rather than answer it
        unfiltered. One that names it declares the entity's filters
        (``EntitySchema.filters``: the core refuses others, ``unknown_filter``),
        or refuses a filter the provider does not know itself
        (``ValidationFailed``), for the same reason: a provider ignoring it
        (Shopify does) would answer an unfiltered list as if filtered.
    :param since: only records modified (or, where the provider can only
        filter on creation, created) at or after this time; ``None`` for all.
        Always timezone-aware UTC, from 1970 on (the core refuses others).
        Where it filters on creation, declare the schema's
        ``since_on_creation``: sync then never pulls increments by it.
    :returns: a :class:`~hub.types.Page`; ``next_cursor`` is ``None`` exactly
        on the last page. Following cursors from the first page to the last
        yields every record once. A listing the provider cannot continue
        (its data changed under the cursor) either raises ``ValidationFailed``
        with code ``invalid_cursor`` (sync starts its pass over) or starts
        over itself from the first record and says so with ``restarted``.
        ``records`` is a list of objects (the core refuses anything else as
        a ``ProviderError``).
    :raises NotFound: unknown entity.
    :raises ValidationFailed: a cursor the provider no longer takes.
    :raises ProviderError: the provider says more records follow but gives
        no way to them (an empty page with ``has_more``, a next link without
        its cursor, the same cursor again): ``next_cursor=None`` there would
        end a full pass early, and sync would take the records it did not
        list for deleted.
    """


@hookspec(firstresult=True)
def get_record(ctx: ProviderContext, entity: str, record_id: str) -> dict[str, Any]:
    """Fetch one record.

    Sync calls it before pushing an update or delete under the
    ``provider_wins`` and ``review`` policies, and compares the answer with
    the record as last pulled to notice a change made at the provider since;
    again after a write refused as stale (:class:`~hub.types.StaleVersion`);
    and the webhook processor calls it for a record two events of the same
    second cannot be ordered for. Keep it one request.

    :returns: the record as the provider represents it (unwrapped: the
        product, not ``{"product": ...}``), in the same shape as
        ``list_records`` gives it, or every push would look like a conflict.
    :raises NotFound: no such record.
    """


@hookspec(firstresult=True)
def create_record(
    ctx: ProviderContext, entity: str, data: dict[str, Any], idempotency_key: str
) -> dict[str, Any]:
    """Create a record.

    Only called when the entity's schema has ``supports_create``.

    :param data: the fields to set, in the provider's names.
    :param idempotency_key: a key unique to this create and connection
        (ASCII, at most 68 characters), stable across the core's retries and
        re-sends; send it where the provider supports idempotency. A
        client's own key reaches the plugin derived from it, never as typed.
    :returns: the created record, including its id, whole and in the shape
        ``list_records`` gives it: sync stores what this returns as the
        provider's version, so that its next pull sees no change (no echo).
        Where the provider answers a write with part of the record (HubSpot's
        ``properties`` written, Salesforce's id), declare the schema's
        ``read_after_write`` and return the answer with the id at
        ``id_field``: the core reads the record whole with ``get_record``.
    :raises ValidationFailed: the provider rejected the data.
    """


@hookspec(firstresult=True)
def update_record(
    ctx: ProviderContext, entity: str, record_id: str, data: dict[str, Any], base: dict[str, Any] | None
) -> dict[str, Any]:
    """Update a record with the given fields (a partial update).

    Only called when the entity's schema has ``supports_update``.

    :param base: the provider's version of the record the change was made
        on, as sync last stored it (or just read it), ``None`` when unknown
        (a call through the records API). For a provider with optimistic
        concurrency, send its token (QuickBooks' ``SyncToken``, an ``ETag``
        as ``If-Match``), so that a change made there meanwhile is refused
        rather than overwritten, and raise (or describe) that refusal as
        :class:`~hub.types.StaleVersion`. Plugins without it leave the
        parameter out of their signature.
    :returns: the updated record, whole and in the shape ``list_records``
        gives it (as for :func:`create_record`).
    :raises NotFound: no such record.
    :raises ValidationFailed: the provider rejected the data.
    :raises StaleVersion: the record changed since ``base``.
    """


@hookspec(firstresult=True)
def delete_record(ctx: ProviderContext, entity: str, record_id: str, base: dict[str, Any] | None) -> bool:
    """Delete a record.

    Only called when the entity's schema has ``supports_delete``. ``base``
    is as for :func:`update_record`.

    :returns: ``True``; or, where the provider keeps the record after its
        deletion (Stripe cancels a subscription, which stays retrievable and
        listed as ``canceled``), the record as it now is: sync stores that
        version instead of marking the record deleted (the next pull would
        bring it back), and the API answers it as ``record``. (A provider's
        deletion answer passed on, ``{"id": ..., "deleted": true}``, counts as
        ``True``.)
    :raises NotFound: no such record, where the provider says so. A provider
        whose deletion answers success for any id (HubSpot's archive) needs
        no extra call to tell: the record is gone either way.
    :raises StaleVersion: the record changed since ``base``.
    """


@hookspec(firstresult=True)
def run_action(ctx: ProviderContext, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one of the operations listed by ``provider_actions``.

    :param action: the action's name.
    :param params: the parameters the client sent, already checked against the
        action's required fields.
    :returns: a JSON-serialisable result.
    """


@hookspec(firstresult=True)
def describe_error(response: httpx.Response, ctx: ProviderContext) -> HubError | ErrorDescription | str | None:
    """Read the provider's error body of a failed response.

    ``ctx`` is the context of the call that got it (name it only if the
    reading needs the connection: the account's time zone, which HubSpot's
    daily limit resets at midnight of).

    Called by ``ctx.http`` for every response with status >= 400 after the
    core's retries, and for a 429 without ``Retry-After`` before each retry
    (see below). It must not fail on a body it does not know (a proxy's
    empty or HTML answer): return ``None`` then. The core picks the error class from the status (401
    ``AuthFailed``, which marks the connection broken; 403
    ``PermissionDenied``, which does not; 404 ``NotFound``, 400/409/422
    ``ValidationFailed``, 429 ``RateLimited``, 5xx ``ProviderUnavailable``).

    :returns: the provider's human message (the core keeps its class), an
        :class:`~hub.types.ErrorDescription` (the message with the ``fields``
        the provider names, its error object as ``details``, a ``code``: the
        core still picks the class, and ``code`` replaces the class's code in
        the API's answer, so give one only where it tells clients more (a
        refused write's reason, ``duplicate_name``) and leave it ``None``
        where the class's code says it: a refused key stays
        ``provider_auth_failed``, which clients match on), a :class:`~hub.types.HubError` to raise
        instead (when the body says more than the status, as Plaid's
        ``error_code`` does), or ``None`` to use a generic message. Fields
        are dotted paths into the provider's records (Stripe's ``param``
        ``address[city]`` is ``address.city``): the API shows them, and a
        refused push shows them in the tenant's fields. For a 429 without
        ``Retry-After``, a ``RateLimited(retry_after=...)`` says how long the
        limit lasts (HubSpot names it in the body: ten seconds, or a day):
        the core is consulted before it retries, waits that long, or gives up
        at once when that is longer than it waits (with a rate limit declared, the connection's next calls
        then fail unsent until the time is up). A quota answered with
        another status (Salesforce's 403 ``REQUEST_LIMIT_EXCEEDED``) is a
        ``RateLimited(retry_after=...)`` too: longer than the core waits, it
        refuses the connection's next calls unsent alike. Where the provider
        says which of several declared limits a 429 met (Xero's
        ``X-Rate-Limit-Problem``), ``RateLimited(limit=name)`` names it
        (``RateLimit.name``): that limit is the one paused, or refused, for
        every call it counts (the whole app's, for a ``scope="app"`` limit);
        with a named limit counting the call, the core consults this hook on
        every 429 of it. A ``ProviderUnavailable(..., retry_now=True)`` (the
        provider says the same request succeeds if sent again shortly, as
        Stripe's ``Stripe-Should-Retry: true``) makes the core re-send an
        idempotent request with backoff before giving up.
    """


# ---------------------------------------------------------------------------
# webhooks: inbound deliveries
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def webhook_connection_key(request: WebhookRequest) -> str | list[str] | None:
    """Say which connection an (unverified) delivery belongs to.

    Read the provider-side identity the delivery carries (Shopify's
    ``X-Shopify-Shop-Domain``, Plaid's ``item_id``, Stripe's ``account``). The
    core finds the connection whose ``webhook_key`` equals it, or, for a
    connection without one (made from a typed API key), whose
    ``provider_account`` does: the ``account`` its ``test_connection``
    named (HubSpot's portal id). It then calls ``verify_webhook`` with that
    connection's context. The core routes deliveries whose URL carries
    ``?connection_id=`` without this hook.

    A delivery batching several accounts (QuickBooks' notifications of
    several companies, HubSpot's of several portals) returns them all (at
    most 100): each connection among them verifies the delivery, and its
    ``verify_webhook`` returns only the events of its own account
    (``ctx.account``); accounts no connection has are passed over.

    :returns: the key, the keys, or ``None`` when the delivery names none.
    """


@hookspec(firstresult=True)
def verify_webhook(ctx: ProviderContext, request: WebhookRequest) -> list[WebhookEvent]:
    """Verify a raw delivery and turn it into normalized events.

    Check the signature over the raw ``request.body`` in constant time, and
    the delivery's age against ``ctx.provider.webhook_tolerance_seconds``
    where the provider signs a timestamp. A signature over the request line
    too (HubSpot's v3: method, URI, body, timestamp) takes ``request.method``
    and ``request.url``, the URL the provider called as the public sees it
    (``HUB_PUBLIC_URL``'s, with the raw query). The core stores each event once
    (by ``dedup_key``): a replayed delivery is recognised as a duplicate.

    A delivery saying the connection itself broke or works again (a revoked
    grant, an uninstalled app, a bank login to renew) is an event with action
    :data:`~hub.types.CONNECTION_BROKEN` or :data:`~hub.types.CONNECTION_REPAIRED`
    and no entity; the core sets the connection's ``status`` and ``last_error``
    (the event's ``message``) from it. One saying it will stop working unless
    its user acts by some time (consent about to expire) is
    :data:`~hub.types.CONNECTION_WARNING`: the core shows the ``message`` (say
    when) as the connection's ``warning``, its status unchanged, until the user
    authorizes again or a ``CONNECTION_REPAIRED`` comes.

    :returns: the :class:`~hub.types.WebhookEvent` list (may be empty for
        deliveries that carry no change, such as pings).
    :raises WebhookRejected: the signature is missing, wrong or stale, or the
        body is malformed. Its message goes to the hub's log, not to the
        sender, who is answered one text whatever the reason (the route
        answers anyone); ``code="webhook_stale"`` for a delivery whose valid
        signature is too old is answered as it is: check the signature first.
    """


@hookspec(firstresult=True)
def verify_app_webhook(ctx: ProviderContext, request: WebhookRequest) -> bool:
    """Say whether a delivery no connection matches was signed for the operator's app.

    Optional, for providers that sign every delivery with the app's secret
    (Shopify's client secret, Xero's webhook key), not a connection's. The
    core calls it only when no connection has the accounts
    ``webhook_connection_key`` named, or it named none: the account was
    disconnected, or its connection deleted, and the provider still delivers
    (Shopify's ``shop/redact``, 48 hours after an uninstall), or the
    provider checks the endpoint with a delivery of no events (Xero's
    "intent to receive"). ``True`` answers the delivery ``200`` with nothing
    stored or applied (the hub holds nothing of that account), so the
    provider stops retrying and does not count the app's endpoint as
    failing; ``False`` (or no implementation) answers it ``webhook_rejected``.
    Acknowledge only what the provider sends for accounts the app no longer
    has: another delivery refused is retried, and one may come while its
    account is being connected.

    :param ctx: an app context: the operator's settings, no connection
        (``ctx.config`` and ``ctx.credentials`` are empty).
    :returns: ``True`` only when the signature over ``request.body`` matches,
        checked in constant time.
    :raises WebhookRejected: ``code="webhook_stale"`` for a signed delivery
        too old, as ``verify_webhook`` answers one for an account with a
        connection (the sender must not tell the two apart).
    """


@hookspec(firstresult=True)
def register_webhook(ctx: ProviderContext, url: str, events: list[str]) -> dict[str, Any]:
    """Subscribe the hub's webhook URL at the provider.

    :param url: the absolute URL of the hub's ``POST /webhooks/{provider}``
        for this connection.
    :param events: hub event types wanted (``order.created``); empty for the
        provider's default set.
    :returns: ``{"id": <subscription id>}``, plus ``"secret"`` when the
        provider issues a signing secret; the core stores it encrypted in the
        connection's credentials as ``webhook_secret``.
    """
