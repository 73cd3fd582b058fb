"""A rotated refresh token the provider issued is lost when saving
it fails once for a passing reason (SQLite's write lock held past its busy
timeout by a sync writing pages, a PostgreSQL connection dropped): the
provider has spent the old token, the new one was only in memory, and the
connection's next refresh is refused: ``expired``, the user must authorize
again."""
from __future__ import annotations

import sqlalchemy as sa

from hub.models import Connection
from hub.runtime import Hub
from tests.conftest import API
from tests.test_oauth import (_oauth_app, expire_soon, finish, oauth_fake, oauth_hub,  # noqa: F401
                              provider_redirect, start, stored_secrets)


def test_a_rotated_refresh_token_survives_one_failed_save(oauth_hub, oauth_fake, monkeypatch):  # noqa: F811
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    expire_soon(hub, connection_id)
    real_save = Hub._save_refreshed
    failures = []

    def save_failing_once(self, *args, **kwargs):
        if not failures:
            failures.append(1)
            raise sa.exc.OperationalError("UPDATE connections ...", {}, Exception("database is locked"))
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Hub, "_save_refreshed", save_failing_once)
    records = f"{API}/connections/{connection_id}/entities/contacts/records"
    try:
        client.get(records, headers=headers)  # its refresh was answered, its save failed once
    except sa.exc.OperationalError:
        pass  # (a 500 to that caller: the TestClient raises it)
    assert failures and oauth_fake[1].state.refresh_calls == 1
    # Whatever that call answered, the grant must still work: the token stored (or held) is the
    # one the provider has not spent.
    expire_soon(hub, connection_id)
    again = client.get(records, headers=headers)
    with hub.session() as session:
        stored = session.get(Connection, connection_id)
    assert stored.status == "connected", (stored.status, stored.last_error)
    assert again.status_code == 200, again.text
    assert stored_secrets(hub, connection_id)["refresh_token"] in oauth_fake[1].state.refresh
