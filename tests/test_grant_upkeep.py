"""The grant upkeep: a connection whose refresh token would lapse before
anything calls the provider (a quiet shop, a sync turned off) is refreshed
ahead of time by the scheduler, through the same locked refresh as a call's."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from hub.models import Connection, utcnow
from hub.services import connections
from hub.sync.scheduler import GRANT_UPKEEP_EVERY
from tests.conftest import API
from tests.oauth_provider import build_plugin
from tests.test_oauth import _oauth_app, finish, provider_redirect, start
from tests.test_oauth_refresh_refused import oauth_fake  # noqa: F401  (its token endpoint can refuse)

DAY = 86400


@pytest.fixture
def grant_hub(settings, example_registry, oauth_fake, monkeypatch):  # noqa: F811
    """The OAuth provider, each refresh token lasting 30 days."""
    yield from _oauth_app(settings, example_registry, oauth_fake, monkeypatch, build_plugin(grant_lifetime=30 * DAY))


def connect(client, headers) -> str:
    return finish(client, provider_redirect(start(client, headers)))["connection_id"]


def lapses_in(hub, connection_id: str, days: float) -> None:
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id)
                        .values(refresh_expires_at=utcnow() + timedelta(days=days)))
        session.commit()


def connection(client, headers, connection_id: str) -> dict:
    return client.get(f"{API}/connections/{connection_id}", headers=headers).json()["connection"]


def scheduler_pass(client, app, now: datetime) -> None:
    """One scheduler tick at ``now``, and the upkeep it started, awaited."""
    scheduler = app.state.sync_scheduler

    async def tick_and_wait():
        await scheduler.tick(now)
        if scheduler._renewing is not None:
            await scheduler._renewing
    client.portal.call(tick_and_wait)


def test_the_scheduler_refreshes_a_grant_about_to_lapse(grant_hub, oauth_fake):  # noqa: F811
    client, headers, app = grant_hub
    hub, fake = app.state.hub, oauth_fake[1]
    cid = connect(client, headers)
    first = datetime.fromisoformat(connection(client, headers, cid)["refresh_expires_at"])
    assert timedelta(days=29) < first - datetime.now(timezone.utc) <= timedelta(days=30)
    later = utcnow() + GRANT_UPKEEP_EVERY * 2
    scheduler_pass(client, app, later)
    assert fake.state.refresh_calls == 0  # 30 days left
    lapses_in(hub, cid, days=6)  # (HUB_GRANT_RENEWAL_DAYS: 7)
    scheduler_pass(client, app, later + timedelta(seconds=1))
    assert fake.state.refresh_calls == 0  # the upkeep runs every ten minutes, not at every tick
    scheduler_pass(client, app, later + GRANT_UPKEEP_EVERY)
    assert fake.state.refresh_calls == 1
    renewed = connection(client, headers, cid)
    assert renewed["status"] == "connected"
    assert datetime.fromisoformat(renewed["refresh_expires_at"]) - datetime.now(timezone.utc) > timedelta(days=29)
    response = client.get(f"{API}/connections/{cid}/entities/contacts/records", headers=headers)
    assert response.status_code == 200, response.text  # the rotated tokens were kept


def test_a_refused_renewal_expires_the_connection_and_a_passing_failure_waits(grant_hub, oauth_fake):  # noqa: F811
    client, headers, app = grant_hub
    hub, fake = app.state.hub, oauth_fake[1]
    cid = connect(client, headers)
    lapses_in(hub, cid, days=1)
    fake.state.forbid_token, fake.state.token_status = True, 503
    now = utcnow()
    assert client.portal.call(lambda: connections.renew_grants(hub, now)) == 0
    assert connection(client, headers, cid)["status"] == "connected"  # a passing failure
    tried = fake.state.token_requests
    assert tried > 0
    assert client.portal.call(lambda: connections.renew_grants(hub, now + timedelta(minutes=30))) == 0
    assert fake.state.token_requests == tried  # an hour's wait before it is tried again
    fake.state.token_status = 400  # the provider refuses the grant now
    assert client.portal.call(lambda: connections.renew_grants(hub, now + timedelta(minutes=61))) == 0
    assert fake.state.token_requests > tried
    assert connection(client, headers, cid)["status"] == "expired"
    assert "token refresh refused" in connection(client, headers, cid)["last_error"]
    fake.state.forbid_token = False
    assert client.portal.call(lambda: connections.renew_grants(hub, now + timedelta(hours=3))) == 0  # (expired)


def test_only_grants_in_use_are_renewed(grant_hub, oauth_fake):  # noqa: F811
    """Not a disconnected or expired connection's: its user must connect again."""
    client, headers, app = grant_hub
    hub, fake = app.state.hub, oauth_fake[1]
    cid = connect(client, headers)
    endpoint = client.post(f"{API}/event-endpoints", json={"url": "http://127.0.0.1:9/hub-events",
                                                           "events": ["connection.status_changed"]},
                           headers=headers).json()["endpoint"]
    lapses_in(hub, cid, days=30)
    now = utcnow() + timedelta(days=25)
    for status in ("disconnected", "expired"):
        with hub.session() as session:
            session.execute(sa.update(Connection).where(Connection.id == cid).values(status=status))
            session.commit()
        assert client.portal.call(lambda: connections.renew_grants(hub, now)) == 0
    assert fake.state.refresh_calls == 0
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == cid).values(status="error"))
        session.commit()
    assert client.portal.call(lambda: connections.renew_grants(hub, now)) == 1  # (its grant may be fine)
    assert fake.state.refresh_calls == 1
    assert connection(client, headers, cid)["status"] == "connected"
    # The app hears that the connection works again (the statuses above were set behind the hub's back).
    told = client.get(f"{API}/event-endpoints/{endpoint['id']}/deliveries", headers=headers).json()["deliveries"]
    assert [(d["payload"]["data"]["previous_status"], d["payload"]["data"]["status"]) for d in told] == [
        ("error", "connected")]


def test_a_rotated_refresh_token_of_unsaid_lifetime_has_no_grant_expiry(settings, example_registry, oauth_fake,  # noqa: F811
                                                                       monkeypatch):
    """The old refresh token's expiry is not the new one's."""
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch, build_plugin()):
        cid = connect(client, headers)
        lapses_in(app.state.hub, cid, days=3)  # (said at connecting, say, by an older plugin)
        assert client.portal.call(lambda: connections.renew_grants(app.state.hub, utcnow())) == 1
        assert connection(client, headers, cid)["refresh_expires_at"] is None
        assert client.portal.call(lambda: connections.renew_grants(app.state.hub, utcnow())) == 0


def test_a_grant_the_refresh_does_not_extend_is_not_refreshed_at_every_pass(settings, example_registry,  # noqa: F811
                                                                            oauth_fake, monkeypatch):
    """Refresh tokens of a fixed lifetime (a 3-day grant, inside the 7 days): refreshing
    does not move its end, so it would be picked at every pass. (A review found it.)"""
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch,
                                           build_plugin(grant_lifetime=3 * DAY)):
        connect(client, headers)
        now = utcnow()
        for minutes in (0, 10, 20, 30):
            client.portal.call(lambda: connections.renew_grants(app.state.hub, now + timedelta(minutes=minutes)))
        assert oauth_fake[1].state.refresh_calls == 1
        client.portal.call(lambda: connections.renew_grants(app.state.hub, now + timedelta(days=1, minutes=1)))
        assert oauth_fake[1].state.refresh_calls == 2  # a day later
