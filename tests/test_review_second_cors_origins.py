"""``Settings._origins`` (hub/config.py) refuses a ``HUB_CORS_ORIGINS`` entry
that is not an origin, "a browser sends its page's origin whole", but takes
entries no browser's ``Origin`` ever equals, and ``create_app`` hands them to
Starlette's CORSMiddleware, which compares exactly: browsers serialize an
origin with a lower-case scheme and host and without the scheme's default
port. Such a setting starts the hub, and every preflight is refused (400)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.config import Settings
from tests.conftest import API


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("configured", "sent"), [
    ("https://App.Example.com", "https://app.example.com"),
    ("HTTPS://app.example.com", "https://app.example.com"),
    ("https://app.example.com:443", "https://app.example.com"),
])
def test_an_accepted_origin_setting_matches_the_browsers_origin(settings, example_registry, configured, sent):
    Settings(data_dir=settings.data_dir, secret_key="k", cors_origins=configured)  # the validator takes it
    settings.cors_origins = configured
    with TestClient(create_app(settings, example_registry)) as client:
        preflight = client.options(f"{API}/connections",
                                   headers={"Origin": sent, "Access-Control-Request-Method": "GET"})
        # Fails: 400 "Disallowed CORS origin", no Access-Control-Allow-Origin.
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers.get("access-control-allow-origin") == sent
