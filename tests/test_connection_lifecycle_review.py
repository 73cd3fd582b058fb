"""Review of the connection lifecycle (connect, reconnect, refresh, test,
edit, delete): each test showed a finding and failed on the code as reviewed."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from hub.models import Connection
from hub.runtime import Hub
from hub.services.connections import upsert_from_credentials
from hub.types import Credentials, HubError
from tests.test_oauth import (expire_soon, finish, oauth_fake, oauth_hub,  # noqa: F401
                              provider_redirect, start, stored_secrets)


def test_a_refused_refresh_of_a_replaced_grant_met_inside_a_call_leaves_the_new_grant_connected(
        oauth_hub, oauth_fake, settings, example_registry):  # noqa: F811
    """As tests/test_refresh_refused_after_reconnect.py, but the refresh is the
    one a provider call makes (a sync's list_records), as it happens in real
    use: ``_refresh_refused`` skips the mark (the credentials' version moved),
    but the AuthFailed(token_refresh_failed) it raises goes up through
    ``Hub.call``, which marks the connection ``expired`` unconditionally."""
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    connection = expire_soon(hub, connection_id)
    fake = oauth_fake[1]

    worker = Hub(settings, example_registry)
    provider = worker.provider("oauthex")
    context = worker.context(provider, connection)
    real_call = provider.call

    async def calling(hook, **kwargs):
        if hook == "refresh_credentials":
            # The user's callback lands now: the provider revoked the old refresh token.
            fake.state.refresh.discard(context.credentials["refresh_token"])
            await asyncio.to_thread(upsert_from_credentials, hub, connection.organization_id,
                                    hub.provider("oauthex"), Credentials(
                secrets={"access_token": "NEW_GRANT_AT", "refresh_token": "NEW_GRANT_RT"},
                expires_at=datetime.now(timezone.utc) + timedelta(hours=1), webhook_key="acct_1",
                config={"account": "acct_1"}))
        return await real_call(hook, **kwargs)

    provider.call = calling

    async def go():
        try:
            await worker.call(provider, "list_records", context, entity="contacts", cursor=None, page_size=None,
                              filters={}, since=None)
        except HubError:
            pass  # (the worker's own call fails; the stored connection is what matters)
        finally:
            provider.__dict__.pop("call", None)
            await worker.close()

    asyncio.run(go())
    assert stored_secrets(hub, connection_id)["refresh_token"] == "NEW_GRANT_RT"
    with hub.session() as session:
        stored = session.get(Connection, connection_id)
    assert stored.status == "connected", (stored.status, stored.last_error)
