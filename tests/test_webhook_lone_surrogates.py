"""Lone UTF-16 surrogates, which JSON allows ("\\ud800") and UTF-8 cannot hold,
in provider JSON: mended to U+FFFD where it comes in, not failing every try."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlmodel import select

from hub.http import read_json
from hub.models import SyncRecord, WebhookEvent, utcnow
from hub_example.testing import API_KEY, signed_delivery

API = "/api/v1/integrations"
SECRET = "whsec_example123"


@pytest.fixture(autouse=True)
def utc_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _connect(client, auth):
    body = {"provider": "example", "credentials": {"api_key": API_KEY, "webhook_secret": SECRET}}
    response = client.post(f"{API}/connections", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["connection"]


def _wait(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout}s"
        time.sleep(0.05)


def test_a_record_with_a_lone_surrogate_escape_is_not_a_poison_event(client, auth, hub_app, example_fake):
    """JSON allows "\\ud800" (JS's JSON.stringify writes it for a string cut in the
    middle of an emoji). Every attempt to apply it failed alike (UnicodeEncodeError
    in the record store), 15 times, then `failed`."""
    text = "lone \ud800 surrogate"
    hub = hub_app.state.hub
    connection = _connect(client, auth)
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    note = {"id": "note_odd", "title": text, "body": "", "updated_at": utcnow().isoformat()}
    body, headers = signed_delivery(SECRET, {"id": "e_odd", "type": "note.updated", "data": note}, int(time.time()))
    answer = client.post(url, content=body, headers=headers)
    assert answer.status_code != 500, answer.text
    if answer.status_code == 200 and answer.json()["received"]:
        def looked_at():
            with hub.session() as session:
                event = session.exec(select(WebhookEvent)).one()
                return event.status != "pending" or event.attempts > 0
        _wait(looked_at, "the event applied")
        with hub.session() as session:
            event = session.exec(select(WebhookEvent)).one()
        assert (event.status, event.attempts, event.error) == ("processed", 1, None)
        with hub.session() as session:
            stored = session.exec(select(SyncRecord).where(SyncRecord.remote_id == "note_odd")).one()
        assert stored.data["title"] == "lone \ufffd surrogate"


def test_a_provider_answer_with_lone_surrogates_reads_mended():
    body = b'{"data": [{"id": "1", "title": "cut \\ud83d", "\\udc00": ["\\ud83d\\ude00", 1]}]}'
    response = httpx.Response(200, content=body, request=httpx.Request("GET", "http://provider.test/notes"))
    assert read_json(response, "data") == [{"id": "1", "title": "cut \ufffd", "\ufffd": ["\U0001f600", 1]}]
