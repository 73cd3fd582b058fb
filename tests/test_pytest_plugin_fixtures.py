"""The pytest plugin's fixtures for plugin authors' tests."""

from __future__ import annotations

import os

import pytest

from hub.config import Settings


@pytest.fixture
def operators_shell(monkeypatch, tmp_path):
    """A shell set up to run the operator's hub (set before ``hub_test_settings``)."""
    monkeypatch.setenv("HUB_DATABASE_URL", f"sqlite:///{tmp_path / 'operator.db'}")
    monkeypatch.setenv("HUB_SECRET_KEY", "operators-key")
    monkeypatch.setenv("HUB_HTTP_DEADLINE_SECONDS", "5")
    monkeypatch.setenv("HUB_PLUGINS", "stripe")
    monkeypatch.setenv("HUB_ACME_ORIGIN", "http://127.0.0.1:9")


def test_hub_test_settings_take_nothing_of_the_shells_hub_settings(operators_shell, hub_test_settings, tmp_path):
    """A plugin author's tests run in a shell set up for a real hub must not
    write into its database (found by a review: PLUGINS.md's own snippet did)."""
    assert hub_test_settings.database_url == f"sqlite:///{tmp_path / 'hub.db'}"
    assert hub_test_settings.data_dir == tmp_path / "hub-data"
    assert hub_test_settings.secret_key == "test-secret-key"
    assert hub_test_settings.http_deadline_seconds == Settings.model_fields["http_deadline_seconds"].default
    assert "HUB_PLUGINS" not in os.environ  # (the registry would load only the operator's list)
    assert os.environ["HUB_ACME_ORIGIN"] == "http://127.0.0.1:9"  # provider settings are the test's to set
