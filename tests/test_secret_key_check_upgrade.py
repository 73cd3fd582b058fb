"""Findings of a review (batch 2) of the core's changes since 131d62e: each
test showed a finding, and failed on the code as reviewed."""

from __future__ import annotations

import logging

from hub.models import SecretKeyCheck
from hub.runtime import Hub
from hub.services.events import create_endpoint
from hub.services.orgs import create_organization

NOT_THE_DATABASES_KEY = "not the one the database's secrets were sealed with"


def test_an_upgraded_database_whose_secrets_are_an_endpoints_is_checked_against_them(settings, example_registry,
                                                                                       caplog):
    """A database from before the key check holds secrets, but no
    connection's credentials: an event endpoint's signing secret (an app set
    up its endpoint before connecting anything, or its connections were
    deleted). ``_a_stored_secret`` looks at connections only, finds none, and
    the first process to start seals the check with its key whatever it is:
    one with a mistyped HUB_SECRET_KEY (it cannot open the endpoint's secret)
    becomes the database's key, in silence, and the processes with the right
    key are each logged as the wrong one."""
    right = Hub(settings.model_copy(update={"event_private_urls": True}), example_registry)
    right.migrate()
    with right.session() as session:
        org, _key = create_organization(session, "acme")
    create_endpoint(right, org.id, url="https://app.example.com/hub-events", events=["sync.succeeded"],
                    description=None, enabled=True)
    with right.session() as session:  # (as a database upgraded from before the check holds: none yet)
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
