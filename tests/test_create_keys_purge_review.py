"""Found by a review of 5360bec: each test showed a finding and failed on
the code as reviewed. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import select

from hub.models import IdempotentCreate, utcnow
from tests.test_example_end_to_end import connect
from tests.test_idempotent_creates import _answers_lost
from tests.test_push_and_create_keys_review import _keys_kept_a_day, _unanswered_a_day_on, notes_url, titled


def test_a_records_api_create_whose_answer_was_lost_survives_the_schedulers_purge(
        client, auth, hub_app, example_fake, monkeypatch):
    """5360bec keeps a key whose create got no answer 30 days
    (``UNSETTLED_KEY_DAYS``), but only in ``_claim_key``'s own purge: the
    scheduler's ``Scheduler.purge`` (hub/sync/scheduler.py) still deletes
    every ``IdempotentCreate`` older than ``IDEMPOTENCY_KEY_DAYS``, whatever
    its status. A hub whose scheduler runs (every deployment) drops the
    ``unsent`` row holding ``first_sent`` after a day; the client's retry 25
    hours later is sent again under the provider's forgotten key: a second
    record (the batch-3 test passes only because no purge runs in it)."""
    from hub.sync.scheduler import Scheduler, SyncService
    from hub.sync.worker import LocalExecutor

    fake = example_fake[1]
    connection = connect(client, auth)
    hub = hub_app.state.hub
    _keys_kept_a_day(hub, monkeypatch)
    _answers_lost(hub, monkeypatch, {"answers": 1})

    body = {"data": {"title": "purged meanwhile"}, "idempotency_key": "order-9"}
    assert client.post(notes_url(connection), json=body, headers=auth).status_code == 503
    assert len(titled(fake, "purged meanwhile")) == 1  # made, its answer lost
    _unanswered_a_day_on(hub)
    Scheduler(SyncService(hub, LocalExecutor(hub)), interval=60).purge(utcnow())  # its hourly round
    fake.state.idempotency.clear()  # the provider forgot the key

    late = client.post(notes_url(connection), json=body, headers=auth)
    # Fails: 201, and a second note (the scheduler purged the row after one day).
    assert late.status_code == 409 and late.json()["code"] == "create_outcome_unknown", late.text
    assert len(titled(fake, "purged meanwhile")) == 1


def test_a_key_whose_create_never_reached_the_provider_is_free_for_other_data_after_its_day(
        client, auth, hub_app, example_fake):
    """A create refused unsent (429: nothing made, no ``first_sent``) leaves
    its row ``unsent``; 5360bec now keeps every row not ``done``/``refused``
    30 days in ``_claim_key``. Two days later the client uses the key for
    another record (README: "for a day, ... with other data it is
    idempotency_key_reused"): it is refused ``idempotency_key_reused``, with
    a message saying the key was used "in the last 24 hours" (it was two days
    ago), though nothing was ever made with it. (Whether it is refused also
    depends on whether the scheduler's purge, which keeps one day, ran.)"""
    fake = example_fake[1]
    connection = connect(client, auth)
    hub = hub_app.state.hub

    fake.state.fail_next, fake.state.fail_status = 10, 429
    first = client.post(notes_url(connection), json={"data": {"title": "first try"}, "idempotency_key": "k-429"},
                        headers=auth)
    assert first.status_code == 429, first.text
    assert titled(fake, "first try") == []
    fake.state.fail_next = 0
    with hub.session() as session:  # two days on
        [kept] = session.exec(select(IdempotentCreate)).all()
        assert kept.status == "unsent" and not (kept.record or {}).get("first_sent"), kept
        then = utcnow() - timedelta(days=2)
        session.execute(sa.update(IdempotentCreate).values(created_at=then, updated_at=then))
        session.commit()

    other = client.post(notes_url(connection), json={"data": {"title": "another record"}, "idempotency_key": "k-429"},
                        headers=auth)
    # Fails: 422 idempotency_key_reused ("used ... in the last 24 hours").
    assert other.status_code == 201, other.text
    assert len(titled(fake, "another record")) == 1
