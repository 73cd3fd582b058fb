"""Findings of a review of the secret key check and of one event endpoint per
URL: each test failed on the code as reviewed."""

from __future__ import annotations

import logging

import pytest

from hub.config import SettingsError
from hub.db import migrate
from hub.models import SecretKeyCheck
from hub.runtime import SECRET_KEY_CHECK, Hub
from tests.conftest import API
from tests.sync_support import make_connection

NOT_THE_DATABASES_KEY = "not the one the database's secrets were sealed with"


def test_two_first_starts_racing_to_seal_the_key_check_the_one_that_lost_stops(settings, tmp_path,
                                                                                 example_registry, monkeypatch):
    """Two machines started together on a new database, neither with
    HUB_SECRET_KEY (the case the key check is for): both read no check, both
    insert one; the second insert meets the first's row (IntegrityError,
    swallowed by ``_seal_check``) and ``check_secret_key`` returns without
    reading the check that stands. That start keeps its own key."""
    from hub import runtime

    first, second = (Hub(settings.model_copy(update={"secret_key": None, "data_dir": tmp_path / machine}),
                         example_registry) for machine in ("one", "two"))
    assert first.made_secret_key and second.made_secret_key
    migrate(first.engine)  # (the schema; each start's check below)
    real = runtime._seal_check

    def the_other_start_seals_first(engine, sealed):
        # The interleaving of two starts: the second read no check, then the first's insert commits.
        monkeypatch.setattr(runtime, "_seal_check", real)
        real(first.engine, first.cipher.encrypt(SECRET_KEY_CHECK))
        real(engine, sealed)

    monkeypatch.setattr(runtime, "_seal_check", the_other_start_seals_first)
    try:
        with pytest.raises(SettingsError):
            second.check_secret_key()
        assert not (tmp_path / "two" / "secret.key").exists()
    finally:
        for hub in (first, second):
            hub.engine.dispose()


def _seal_a_connection(hub: Hub) -> None:
    make_connection(hub, "example", {"api_key": "sealed-with-the-right-key"})


def _seal_an_endpoint(hub: Hub) -> None:
    # (An app that set up its endpoint before connecting anything: no connection's credentials.)
    from hub.services.events import create_endpoint
    from hub.services.orgs import create_organization

    with hub.session() as session:
        org, _key = create_organization(session, "acme")
    create_endpoint(hub, org.id, url="https://app.example.com/hub-events", events=["sync.succeeded"],
                    description=None, enabled=True)


@pytest.mark.parametrize("sealed", [_seal_a_connection, _seal_an_endpoint], ids=["connection", "endpoint"])
def test_a_database_upgraded_with_secrets_is_checked_against_them_not_the_first_key_to_start(
        settings, example_registry, caplog, sealed):
    """A database from before migration 0020 holds secrets but no key check.
    The first process to start after the upgrade sealed the check with its own
    key, whatever it was: one with a wrong HUB_SECRET_KEY (it can read none of
    the secrets) was taken for the database's key, silently, and the processes
    holding the right key were then each logged at start as the wrong one.
    (Found with a connection's credentials, then with an endpoint's secret.)"""
    right = Hub(settings.model_copy(update={"event_private_urls": True}), example_registry)
    right.migrate()
    sealed(right)
    with right.session() as session:  # (as a database upgraded from 0019 holds: no check yet)
        session.delete(session.get(SecretKeyCheck, 1))
        session.commit()

    wrong = Hub(settings.model_copy(update={"secret_key": "a-mistyped-key"}), example_registry)
    with caplog.at_level(logging.ERROR, logger="hub"):
        wrong.migrate()  # the first start after the upgrade
    wrong_start = caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="hub"):
        Hub(settings, example_registry).migrate()  # a process with the key the secrets are sealed with
    try:
        assert NOT_THE_DATABASES_KEY not in caplog.text, "the right key is logged as the wrong one"
        assert NOT_THE_DATABASES_KEY in wrong_start, "the wrong key started in silence"
    finally:
        right.engine.dispose()
        wrong.engine.dispose()


@pytest.mark.parametrize("same", ["https://APP.example.com/h", "https://app.example.com:443/h",
                                  "HTTPS://app.example.com/h"])
def test_one_endpoint_per_url_counts_the_same_url_written_otherwise(client, auth, same):
    """A host's case, the scheme's case and the scheme's default port do not
    change where events go (RFC 3986, 6.2.2-6.2.3): the app gets each event
    twice all the same."""
    endpoints = f"{API}/event-endpoints"
    first = client.post(endpoints, json={"url": "https://app.example.com/h"}, headers=auth)
    assert first.status_code == 201, first.text
    second = client.post(endpoints, json={"url": same}, headers=auth)
    assert second.status_code == 409, second.text
    assert second.json()["code"] == "event_endpoint_exists"
