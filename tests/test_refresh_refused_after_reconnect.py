"""A refresh of the old grant refused while the user connected
again must not mark the freshly connected connection ``expired``."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from hub.models import Connection
from hub.runtime import Hub
from hub.services.connections import upsert_from_credentials
from hub.types import Credentials, HubError
from tests.test_oauth import (_oauth_app, expire_soon, finish, oauth_fake, oauth_hub,  # noqa: F401
                              provider_redirect, start, stored_secrets)


@pytest.mark.parametrize("met", ["before_a_call", "inside_a_call"])
def test_a_refused_refresh_of_a_grant_replaced_meanwhile_leaves_the_new_grant_connected(
        oauth_hub, oauth_fake, settings, example_registry, met):  # noqa: F811
    """A worker refreshes the old grant while the user authorizes again (the
    provider revokes the old refresh token as it issues the new grant, as many
    do): the refusal is the old grant's, not the connection's. The connection,
    holding a working new grant, must stay ``connected``: ``expired`` tells the
    app (and the user) to authorize again, and nothing (grant upkeep, a sync's
    recovery) ever sets an expired connection back to connected. Met inside
    a call (a sync's list_records), the refusal went up through ``Hub.call``,
    which marked the connection ``expired`` all the same."""
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
            # The user's callback lands now: the provider revoked the old refresh token, the hub
            # stores the new grant.
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
            if met == "inside_a_call":
                await worker.call(provider, "list_records", context, entity="contacts", cursor=None,
                                  page_size=None, filters={}, since=None)
            else:
                await worker._ensure_fresh(provider, context)
        except HubError:
            pass  # (the worker's own call may fail; the stored connection is what matters)
        finally:
            provider.__dict__.pop("call", None)
            await worker.close()

    asyncio.run(go())
    assert stored_secrets(hub, connection_id)["refresh_token"] == "NEW_GRANT_RT"
    with hub.session() as session:
        stored = session.get(Connection, connection_id)
    assert stored.status == "connected", (stored.status, stored.last_error)
