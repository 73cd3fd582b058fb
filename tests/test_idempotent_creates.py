"""A create through the records API with the client's idempotency key is
made once, whatever the provider: sent again (its answer lost), it answers
the record made the first time; with other data it is refused; when the first
got no answer, a provider that cannot tell a create sent twice is not sent it
again. On SQLite and PostgreSQL, over real HTTP to the example's fake."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from sqlmodel import select

from hub.models import IdempotentCreate, utcnow
from hub.sync.leases import ACTIVE, new_owner
from hub.types import ProviderUnavailable
from tests.conftest import API
from tests.test_example_end_to_end import connect


def notes_url(connection):
    return f"{API}/connections/{connection['id']}/entities/notes/records"


def titled(fake, title):
    return [n for n in fake.state.notes.rows.values() if n["title"] == title]


def _answers_lost(hub, monkeypatch, lose: dict) -> None:
    """The next ``lose["answers"]`` creates are made at the provider and their answers lost."""
    call = hub.call

    async def answer_lost(provider, hook, ctx, **kwargs):
        result = await call(provider, hook, ctx, **kwargs)
        if hook == "create_record" and lose["answers"]:
            lose["answers"] -= 1
            raise ProviderUnavailable("no answer (lost on its way back)", maybe_applied=True)
        return result

    monkeypatch.setattr(hub, "call", answer_lost)


def test_the_same_create_sent_again_answers_the_first_record(client, auth, example_fake):
    fake = example_fake[1]
    connection = connect(client, auth)
    body = {"data": {"title": "once"}, "idempotency_key": "order-42"}
    first = client.post(notes_url(connection), json=body, headers=auth)
    again = client.post(notes_url(connection), json=body, headers=auth)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["record"] == first.json()["record"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert len(titled(fake, "once")) == 1
    # Another key, or none, is another record.
    client.post(notes_url(connection), json={**body, "idempotency_key": "order-43"}, headers=auth)
    client.post(notes_url(connection), json={"data": {"title": "once"}}, headers=auth)
    assert len(titled(fake, "once")) == 3


def test_the_key_with_other_data_is_refused(client, auth, example_fake):
    connection = connect(client, auth)
    client.post(notes_url(connection), json={"data": {"title": "a"}, "idempotency_key": "k-1"}, headers=auth)
    reused = client.post(notes_url(connection), json={"data": {"title": "b"}, "idempotency_key": "k-1"}, headers=auth)
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused", reused.text
    assert reused.json()["fields"] == ["idempotency_key"]
    assert titled(example_fake[1], "b") == []


def test_a_refused_create_frees_its_key(client, auth, example_fake):
    fake = example_fake[1]
    connection = connect(client, auth)
    fake.state.fail_next, fake.state.fail_status = 1, 400
    body = {"data": {"title": "after a refusal"}, "idempotency_key": "k-2"}
    assert client.post(notes_url(connection), json=body, headers=auth).status_code == 422
    made = client.post(notes_url(connection), json=body, headers=auth)
    assert made.status_code == 201 and "Idempotent-Replayed" not in made.headers, made.text
    assert len(titled(fake, "after a refusal")) == 1


def test_a_create_without_an_answer_is_sent_again_only_where_the_provider_dedupes(
        client, auth, hub_app, example_fake, monkeypatch):
    """The example honours Idempotency-Key: sent again, it answers the first
    note. Without that, the record may exist: the hub says so rather than
    make a second."""
    fake = example_fake[1]
    connection = connect(client, auth)
    hub = hub_app.state.hub
    lose = {"answers": 1}
    _answers_lost(hub, monkeypatch, lose)
    body = {"data": {"title": "lost"}, "idempotency_key": "k-3"}
    lost = client.post(notes_url(connection), json=body, headers=auth)
    assert lost.status_code == 503 and lost.json()["code"] == "provider_unavailable", lost.text
    again = client.post(notes_url(connection), json=body, headers=auth)
    assert again.status_code == 201, again.text
    assert [again.json()["record"]["id"]] == [n["id"] for n in titled(fake, "lost")]

    provider = hub.provider("example")
    monkeypatch.setattr(provider, "info", dataclasses.replace(provider.info, idempotent_creates=False))
    lose["answers"] = 1
    body = {"data": {"title": "lost again"}, "idempotency_key": "k-4"}
    assert client.post(notes_url(connection), json=body, headers=auth).status_code == 503
    unknown = client.post(notes_url(connection), json=body, headers=auth)
    assert unknown.status_code == 409 and unknown.json()["code"] == "create_outcome_unknown", unknown.text
    assert "may exist there" in unknown.json()["error"]
    assert len(titled(fake, "lost again")) == 1


def test_a_create_under_way_or_abandoned(client, auth, hub_app, example_fake, monkeypatch):
    """The first request still sending: ask again later. Its process gone
    (killed mid-call): sent again where the provider dedupes, else unknown."""
    connection = connect(client, auth)
    hub = hub_app.state.hub
    sending = new_owner()
    ACTIVE.add(sending.rsplit(":", 1)[-1])
    body = {"data": {"title": "raced"}, "idempotency_key": "k-5"}
    try:
        _first_request(hub, connection, body, owner=sending)
        busy = client.post(notes_url(connection), json=body, headers=auth)
        assert busy.status_code == 409 and busy.json()["code"] == "idempotency_key_in_use", busy.text
        assert busy.headers["Retry-After"] == "1"  # ask again in a moment
    finally:
        ACTIVE.discard(sending.rsplit(":", 1)[-1])
    resent = client.post(notes_url(connection), json=body, headers=auth)  # its process is gone: sent again
    assert resent.status_code == 201 and len(titled(example_fake[1], "raced")) == 1, resent.text

    provider = hub.provider("example")
    monkeypatch.setattr(provider, "info", dataclasses.replace(provider.info, idempotent_creates=False))
    body = {"data": {"title": "killed"}, "idempotency_key": "k-6"}
    _first_request(hub, connection, body, owner="elsewhere:1:gone")
    with hub.session() as session:  # (another machine's process: stale after SENDING_STALE)
        row = session.exec(select(IdempotentCreate).where(IdempotentCreate.key == "k-6")).one()
        row.updated_at = utcnow().replace(year=2000)  # (its key itself is recent: kept)
        session.add(row)
        session.commit()
    unknown = client.post(notes_url(connection), json=body, headers=auth)
    assert unknown.status_code == 409 and unknown.json()["code"] == "create_outcome_unknown", unknown.text


def _first_request(hub, connection, body, owner):
    """The row a first request with ``body`` left while sending."""
    with hub.session() as session:
        session.add(IdempotentCreate(
            connection_id=connection["id"], key=body["idempotency_key"], status="sending", owner=owner,
            fingerprint=hashlib.sha256(json.dumps(["notes", body["data"]], sort_keys=True).encode()).hexdigest()))
        session.commit()


def test_a_record_with_values_json_does_not_hold_is_kept_as_the_api_showed_it(
        client, auth, hub_app, example_fake, monkeypatch):
    """A plugin may answer a datetime: kept as the API wrote it out, not a
    500 after the record was made."""
    from datetime import datetime, timezone

    connection = connect(client, auth)
    hub = hub_app.state.hub
    call = hub.call

    async def with_a_time(provider, hook, ctx, **kwargs):
        result = await call(provider, hook, ctx, **kwargs)
        return {**result, "seen_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)} \
            if hook == "create_record" else result

    monkeypatch.setattr(hub, "call", with_a_time)
    body = {"data": {"title": "timed"}, "idempotency_key": "k-7"}
    first = client.post(notes_url(connection), json=body, headers=auth)
    again = client.post(notes_url(connection), json=body, headers=auth)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json() and first.json()["record"]["seen_at"] == "2026-01-02T03:04:05Z"
    assert again.headers["Idempotent-Replayed"] == "true"


def test_an_empty_key_is_no_key(client, auth, example_fake):
    connection = connect(client, auth)
    for title in ("first", "second"):
        made = client.post(notes_url(connection), json={"data": {"title": title}, "idempotency_key": ""}, headers=auth)
        assert made.status_code == 201 and "Idempotent-Replayed" not in made.headers, made.text
    assert len(titled(example_fake[1], "first")) == len(titled(example_fake[1], "second")) == 1


def test_the_provider_gets_a_key_of_this_connection_only(client, auth, hub_app, example_fake):
    """Providers scope keys by account, which two organizations' connections
    may share: the same client key must not reach another's record there."""
    from tests.conftest import make_org

    fake = example_fake[1]
    other = make_org(hub_app, "other")
    ours, theirs = connect(client, auth), connect(client, other)
    client.post(notes_url(ours), json={"data": {"title": "x"}, "idempotency_key": "order-1"}, headers=auth)
    client.post(notes_url(theirs), json={"data": {"title": "x"}, "idempotency_key": "order-1"}, headers=other)
    sent = list(fake.state.idempotency)
    assert len(titled(fake, "x")) == 2 and len(set(sent)) == 2 and "order-1" not in sent
    assert all(key.startswith("api-") and len(key) == 68 for key in sent)


def test_kept_outcomes_are_purged_after_their_day(hub_app, client, auth, example_fake):
    from datetime import timedelta

    from hub.sync.scheduler import Scheduler, SyncService
    from hub.sync.worker import LocalExecutor

    connection = connect(client, auth)
    client.post(notes_url(connection), json={"data": {"title": "old"}, "idempotency_key": "k-8"}, headers=auth)
    client.post(notes_url(connection), json={"data": {"title": "new"}, "idempotency_key": "k-9"}, headers=auth)
    hub = hub_app.state.hub
    with hub.session() as session:
        row = session.exec(select(IdempotentCreate).where(IdempotentCreate.key == "k-8")).one()
        row.created_at = utcnow() - timedelta(days=1, minutes=1)
        session.add(row)
        session.commit()
    Scheduler(SyncService(hub, LocalExecutor(hub)), interval=60).purge(utcnow())
    with hub.session() as session:
        assert set(session.exec(select(IdempotentCreate.key))) == {"k-9"}


def test_a_keyed_create_whose_answer_was_lost_is_sent_again_under_its_key_and_made_once(
        client, auth, hub_app, example_fake, monkeypatch):
    """A create carrying its key that met 5xx past the retries (ProviderHTTP
    says: not applied, safe to send again under the key) is no refusal: sent
    again, it reaches the provider under the same key, which answers the
    first record; and the key with other data is still another request."""
    from hub.types import ProviderUnavailable

    fake = example_fake[1]
    connection = connect(client, auth)
    hub = hub_app.state.hub
    call = hub.call
    lose = {"answers": 1}
    keys: list[str] = []

    async def answer_lost(provider, hook, ctx, **kwargs):
        if hook == "create_record":
            keys.append(kwargs["idempotency_key"])
        result = await call(provider, hook, ctx, **kwargs)
        if hook == "create_record" and lose["answers"]:
            lose["answers"] -= 1
            raise ProviderUnavailable("provider answered HTTP 502")  # (maybe_applied left False)
        return result

    monkeypatch.setattr(hub, "call", answer_lost)
    body = {"data": {"title": "lost under its key"}, "idempotency_key": "k-5xx"}
    assert client.post(notes_url(connection), json=body, headers=auth).status_code == 503
    other = client.post(notes_url(connection), json={**body, "data": {"title": "other"}}, headers=auth)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused", other.text
    again = client.post(notes_url(connection), json=body, headers=auth)
    assert again.status_code == 201, again.text
    assert len(titled(fake, "lost under its key")) == 1 and keys[0] == keys[1]


def test_a_refused_key_sent_again_starts_its_day_again(client, auth, hub_app, example_fake):
    """(Else a create sent again in the last moments of its key's day could be
    purged while it is under way: its outcome not kept.)"""
    from datetime import timedelta

    fake = example_fake[1]
    connection = connect(client, auth)
    hub = hub_app.state.hub
    fake.state.fail_next, fake.state.fail_status = 1, 400
    body = {"data": {"title": "late"}, "idempotency_key": "k-late"}
    assert client.post(notes_url(connection), json=body, headers=auth).status_code == 422
    with hub.session() as session:
        row = session.exec(select(IdempotentCreate).where(IdempotentCreate.key == "k-late")).one()
        row.created_at = utcnow() - timedelta(hours=23, minutes=59)
        session.add(row)
        session.commit()
    assert client.post(notes_url(connection), json=body, headers=auth).status_code == 201
    with hub.session() as session:
        row = session.exec(select(IdempotentCreate).where(IdempotentCreate.key == "k-late")).one()
        assert row.status == "done" and utcnow() - row.created_at < timedelta(minutes=1)
