"""``hub.cli._hub()`` now refuses to start when ``Hub.provider_settings_problems``
finds a bad ``HUB_<PROVIDER>_ORIGIN``. Two gaps in ``runtime._http_origin``:

- an empty setting (``HUB_STRIPE_ORIGIN=``, what a compose file's
  ``HUB_STRIPE_ORIGIN=${STRIPE_ORIGIN}`` gives when unset) is refused,
  though ``ProviderContext.url`` takes an empty origin for none
  (``if origin:``): a setup that ran before no longer starts, every command
  (``org revoke-key`` included);
- an origin ``urlsplit`` itself refuses (an unbalanced IPv6 bracket) escapes
  as a ValueError traceback, where the change promises one line and exit 1.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from hub import cli
from hub.config import get_settings


@pytest.fixture
def environment(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("HUB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HUB_SECRET_KEY", "test-secret-key")
    monkeypatch.setenv("HUB_PLUGINS", "stripe")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_an_empty_origin_setting_is_no_origin_and_the_hub_starts(environment):
    environment.setenv("HUB_STRIPE_ORIGIN", "")
    result = CliRunner().invoke(cli.main, ["sync", "conn"])  # (a command that calls providers)
    # Failed: exit 1, "Error: HUB_STRIPE_ORIGIN='': not an http:// or https:// URL"
    assert "HUB_STRIPE_ORIGIN" not in result.output and "conn" in result.output, result.output


def test_an_origin_urlsplit_refuses_is_a_one_line_error(environment):
    environment.setenv("HUB_STRIPE_ORIGIN", "http://[::1:8100")
    result = CliRunner().invoke(cli.main, ["sync", "conn"])
    # Fails: ValueError('Invalid IPv6 URL') escapes _http_origin (urlsplit is outside its try).
    assert type(result.exception) is SystemExit, repr(result.exception)
    assert result.exit_code == 1 and "HUB_STRIPE_ORIGIN" in result.output, result.output
