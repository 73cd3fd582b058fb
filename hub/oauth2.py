"""The standard OAuth 2 token exchange (RFC 6749), for plugins to call from
``exchange_code`` and ``refresh_credentials`` instead of writing it again.

Most providers take the grant at their token endpoint (``ProviderInfo.urls
["token"]``) as form fields with the app's client id and secret, and answer
``{"access_token", "refresh_token", "expires_in", ...}``::

    @hookimpl
    async def exchange_code(ctx, code, redirect_uri, code_verifier):
        return await oauth2.token_request(ctx, "authorization_code", code=code, redirect_uri=redirect_uri,
                                          code_verifier=code_verifier)

    @hookimpl
    async def refresh_credentials(ctx):
        return await oauth2.token_request(ctx, "refresh_token", refresh_token=ctx.credentials["refresh_token"])

A refusal by the token endpoint (400 ``invalid_grant``) comes out of
``ctx.http`` as the error of its status, which the core takes for a refused
grant: nothing to map.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import quote

from hub.types import Credentials, ProviderError

__all__ = ["token_request", "token_credentials"]


async def token_request(ctx: Any, grant_type: str, *, client_auth: Literal["body", "basic"] = "body",
                        **fields: str | None) -> Credentials:
    """POST ``grant_type`` and ``fields`` (those not None) to the provider's
    token endpoint with the app's ``client_id`` and ``client_secret``
    settings, in the form body (``client_auth="body"``) or as HTTP Basic
    (``"basic"``, RFC 6749 2.3.1); read the answer with :func:`token_credentials`."""
    form = {"grant_type": grant_type, **{k: v for k, v in fields.items() if v is not None}}
    client_id, secret = ctx.setting("client_id") or "", ctx.setting("client_secret") or ""
    # (JSON is what token_credentials reads; some token endpoints answer a form unless asked: Intuit's, GitHub's.)
    headers = {"Accept": "application/json"}
    if client_auth == "basic":
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        form.update(client_id=client_id, client_secret=secret)
    # (Not with the connection's request_auth: the token being refreshed is no client credential.)
    body = await ctx.http.json("POST", ctx.url("token"), data=form, headers=headers, authenticate=False)
    return token_credentials(body)


def token_credentials(body: Any) -> Credentials:
    """Credentials from a token endpoint's answer: the access token, the
    refresh token when the answer has one (left out, the stored one is kept:
    not every provider rotates it), the expiry ``expires_in`` gives, and the
    refresh token's own, where the answer says it
    (``refresh_token_expires_in``, Shopify's; ``x_refresh_token_expires_in``,
    QuickBooks'): the core's grant upkeep refreshes the grant before then.

    :raises ProviderError: no access token in the answer.
    """
    access = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(access, str) or not access:
        raise ProviderError("the provider's token endpoint answered without an access_token")
    secrets = {"access_token": access}
    refresh = body.get("refresh_token")
    if isinstance(refresh, str) and refresh:
        secrets["refresh_token"] = refresh
    return Credentials(secrets=secrets, expires_at=_after(body.get("expires_in")), refresh_expires_at=_after(
        body.get("refresh_token_expires_in", body.get("x_refresh_token_expires_in"))))


def _after(lifetime: Any) -> datetime | None:
    """When a lifetime in seconds from now ends (None: none, or not a number of seconds)."""
    if isinstance(lifetime, str):  # (some providers send it as text: "3600", "3600.0")
        try:
            lifetime = float(lifetime)
        except ValueError:
            return None
    if isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) and 0 < lifetime < 10 * 365 * 86400:
        return datetime.now(timezone.utc) + timedelta(seconds=lifetime)
    return None
