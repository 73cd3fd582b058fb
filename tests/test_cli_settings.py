"""Operator mistakes in the ``HUB_*`` settings and the CLI's options end the
command with a one-line error naming the setting (exit 1; 2 for a bad
option), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from hub import cli
from hub.config import Settings, SettingsError, get_settings
from tests.sync_support import subprocess_env

#: Every HUB_ variable a test may set: cleared first, so the developer's own do not leak in.
CLEARED = ("HUB_DATABASE_URL", "HUB_SECRET_KEY", "HUB_PLUGINS", "HUB_JWT_SECRET", "HUB_JWT_JWKS_URL")


@pytest.fixture
def environment(tmp_path, monkeypatch):
    """A clean ``HUB_*`` environment around a fresh data directory; the settings
    cache is emptied before and after (each test reads its own)."""
    for key in list(os.environ):
        if key.startswith("HUB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HUB_SECRET_KEY", "test-secret-key")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def assert_one_line_error(result, *expected: str) -> str:
    """The command ended with click's ``Error: ...`` line, no exception escaping it."""
    # (CliRunner keeps an escaping exception in result.exception instead of printing its traceback.)
    assert type(result.exception) is SystemExit, result.exception
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    for text in expected:
        assert text in lines[0], result.output
    return lines[0]


BAD_SETTINGS = [
    ("HUB_DATABASE_URL", "garbage", ["HUB_DATABASE_URL", "not a database URL"]),
    ("HUB_DATABASE_URL", "mysql://u@h/db", ["HUB_DATABASE_URL", "mysql", "SQLite or PostgreSQL"]),
    # (an organization made in one command gone by the next; a file per working directory)
    ("HUB_DATABASE_URL", "sqlite://", ["HUB_DATABASE_URL", "in-memory SQLite database keeps nothing"]),
    ("HUB_DATABASE_URL", "sqlite:///:memory:", ["HUB_DATABASE_URL", "in-memory"]),
    ("HUB_DATABASE_URL", "sqlite:///relative.db", ["HUB_DATABASE_URL", "'relative.db' is relative", "sqlite:////"]),
    ("HUB_DATABASE_URL", "sqlite:////nonexistent/dir/hub.db", ["HUB_DATABASE_URL", "/nonexistent/dir does not exist"]),
    ("HUB_MAX_BODY_BYTES", "abc", ["HUB_MAX_BODY_BYTES='abc'", "valid integer"]),
    ("HUB_MAX_BODY_BYTES", "-1", ["HUB_MAX_BODY_BYTES='-1'", "greater than or equal to 1"]),
    ("HUB_RUN_SCHEDULER", "maybe", ["HUB_RUN_SCHEDULER='maybe'", "boolean"]),
    ("HUB_EVENT_PRIVATE_URLS", "nope", ["HUB_EVENT_PRIVATE_URLS='nope'", "boolean"]),
    ("HUB_SCHEDULER_INTERVAL_SECONDS", "0", ["HUB_SCHEDULER_INTERVAL_SECONDS='0'", "greater than or equal to 0.1"]),
    ("HUB_HTTP_TIMEOUT_SECONDS", "nan", ["HUB_HTTP_TIMEOUT_SECONDS='nan'", "finite"]),
    ("HUB_SYNC_EXECUTOR", "bogus", ["HUB_SYNC_EXECUTOR='bogus'", "'local' or 'queue'"]),
    ("HUB_SYNC_EXECUTOR", "queue", ["HUB_SYNC_EXECUTOR=queue needs PostgreSQL"]),
    ("HUB_JWT_JWKS_URL", "garbage", ["HUB_JWT_JWKS_URL='garbage'", "https://"]),
    # (webhook and OAuth callback URLs are made from it: "notaurl/api/v1/..." was registered at providers)
    ("HUB_PUBLIC_URL", "notaurl", ["HUB_PUBLIC_URL='notaurl'", "not an http:// or https:// URL"]),
    # (a browser sends its page's origin whole: no page's origin ever matched)
    ("HUB_CORS_ORIGINS", "https://ok.example.com,app.example.com", ["HUB_CORS_ORIGINS=", "'app.example.com' is "
                                                                    "not an origin"]),
    ("HUB_PUBLIC_URL", "https://hub.example.com:port", ["HUB_PUBLIC_URL=", "not an http:// or https:// URL"]),

]
#: A loaded provider's settings the core reads: every call was refused (or "unreachable") instead.
BAD_PROVIDER_SETTINGS = [
    ("HUB_STRIPE_REQUESTS_PER_SECOND", "abc", ["HUB_STRIPE_REQUESTS_PER_SECOND='abc'", "must be numbers"]),
    ("HUB_STRIPE_BURST", "0", ["HUB_STRIPE_BURST='0'", "burst a whole number from 1"]),
    ("HUB_STRIPE_REQUESTS_PER_SECOND", "nan", ["HUB_STRIPE_REQUESTS_PER_SECOND='nan'", "a number above 0"]),
    ("HUB_STRIPE_ORIGIN", "not-a-url", ["HUB_STRIPE_ORIGIN='not-a-url'", "not an http:// or https:// URL"]),
    ("HUB_SALESFORCE_ALLOCATION_SHARE", "2", ["HUB_SALESFORCE_ALLOCATION_SHARE='2'", "a fraction above 0"]),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_SETTINGS, ids=[f"{n}={v}" for n, v, _ in BAD_SETTINGS])
def test_a_setting_the_hub_cannot_use_is_a_one_line_error(environment, name, value, expected):
    environment.setenv(name, value)
    assert_one_line_error(invoke("org", "list"), *expected)


@pytest.mark.parametrize(("name", "value", "expected"), BAD_PROVIDER_SETTINGS,
                         ids=[f"{n}={v}" for n, v, _ in BAD_PROVIDER_SETTINGS])
def test_a_provider_setting_the_hub_cannot_use_stops_the_commands_that_call_providers(
        environment, name, value, expected):
    environment.setenv(name, value)
    for command in (["serve", "--port", "8765"], ["worker"], ["sync", "conn"], ["webhooks", "retry", "--all-failed"]):
        assert_one_line_error(invoke(*command), *expected)
    # Not the others: a key is revoked (and secrets resealed) whatever a provider's settings.
    listed = invoke("org", "list")
    assert listed.exit_code == 0, listed.output


@pytest.mark.parametrize("command", [["serve", "--port", "8765"], ["worker"], ["reencrypt"], ["sync", "conn"],
                                     ["webhooks", "list"], ["org", "create", "acme"]])
def test_every_command_reports_bad_settings_in_one_line(environment, command):
    environment.setenv("HUB_MAX_BODY_BYTES", "abc")
    assert_one_line_error(invoke(*command), "HUB_MAX_BODY_BYTES='abc'")
    environment.setenv("HUB_MAX_BODY_BYTES", "1000")
    environment.setenv("HUB_DATABASE_URL", "garbage")
    get_settings.cache_clear()
    assert_one_line_error(invoke(*command), "HUB_DATABASE_URL")


def test_a_data_directory_that_is_a_file_or_cannot_be_made_is_named(environment, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    environment.delenv("HUB_SECRET_KEY")  # (secret.key goes in the data directory too)
    for data_dir, expected in ((a_file, "not a directory"), (a_file / "below", "cannot create the data directory")):
        environment.setenv("HUB_DATA_DIR", str(data_dir))
        get_settings.cache_clear()
        assert_one_line_error(invoke("org", "list"), f"HUB_DATA_DIR={data_dir}", expected)
    # With a database elsewhere, the data directory still holds the generated secret.key.
    environment.setenv("HUB_DATABASE_URL", f"sqlite:///{tmp_path / 'hub.db'}")
    environment.setenv("HUB_DATA_DIR", str(a_file))
    get_settings.cache_clear()
    assert_one_line_error(invoke("org", "list"), f"HUB_DATA_DIR={a_file}", "not a directory")


def test_several_bad_settings_get_a_line_each_and_secrets_are_not_repeated(environment):
    environment.setenv("HUB_MAX_BODY_BYTES", "abc")
    environment.setenv("HUB_RUN_SCHEDULER", "maybe")
    environment.setenv("HUB_DATABASE_URL", "mysql://user:hunter2@db.example.com/hub")
    result = invoke("org", "list")
    assert type(result.exception) is SystemExit and result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 3, result.output
    assert [line.removeprefix("Error: ").split("=")[0].split(":")[0] for line in lines] == [
        "HUB_DATABASE_URL", "HUB_MAX_BODY_BYTES", "HUB_RUN_SCHEDULER"]
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output


def test_sync_executor_accepts_its_values_and_empty_means_by_database(tmp_path):
    assert Settings(data_dir=tmp_path, sync_executor="local").sync_executor == "local"
    assert Settings(data_dir=tmp_path, sync_executor=" Local ").sync_executor == "local"
    assert Settings(data_dir=tmp_path, sync_executor="").sync_executor is None
    on_postgresql = Settings(data_dir=tmp_path, database_url="postgresql://u@h/db", sync_executor="queue")
    assert on_postgresql.sync_executor == "queue"
    for url in (None, f"sqlite:///{tmp_path / 'hub.db'}"):
        with pytest.raises(ValidationError, match="HUB_SYNC_EXECUTOR=queue needs PostgreSQL"):
            Settings(data_dir=tmp_path, database_url=url, sync_executor="queue")


def test_the_queue_executor_is_refused_on_sqlite_at_startup(tmp_path):
    """Settings built without validation still do not get the queue on SQLite."""
    from hub.runtime import Hub
    from hub.sync.worker import executor_kind
    from hub.types import ConfigurationError

    settings = Settings(data_dir=tmp_path, secret_key="k").model_copy(update={"sync_executor": "queue"})
    with pytest.raises(ConfigurationError, match="needs PostgreSQL"):
        executor_kind(Hub(settings))


# (field, refused values, accepted values): 0 is accepted where the README gives it a meaning.
NUMBERS = [
    ("max_body_bytes", [0, -1], [1, 1_048_576]),
    ("oauth_state_ttl_seconds", [0, -5, 10**9], [1, 600, 7 * 86_400]),
    ("refresh_margin_seconds", [-1, 10**9], [0, 120, 2 * 86_400]),
    ("scheduler_interval_seconds", [0, 0.01, -1, "inf", "nan"], [0.5, 1, 30.0]),
    ("sync_tombstone_days", [-1, 36_501], [0, 30]),
    ("sync_log_retention_days", [-1, 10**9], [0, 90]),
    ("webhook_retention_days", [-1], [0, 30]),
    ("event_retention_days", [-1, 10**9], [0, 30]),
    ("sync_stalled_seconds", [0, -3, "inf"], [0.5, 3, 30.0]),
    ("sync_workers", [-1], [0, 2]),
    ("sync_local_concurrency", [0, -1], [1, 4]),
    ("http_retry_attempts", [-1], [0, 1, 6]),  # (0, as before: one try)
    ("http_retry_base_delay", [-0.1, "nan"], [0, 0.5]),
    ("http_timeout_seconds", [0, -1, "inf"], [0.3, 30.0]),
    ("http_deadline_seconds", [0, -1], [1.0, 90.0]),
    ("http_max_response_bytes", [0, -1], [1, 32 * 2**20]),
    ("slice_cache_seconds", [-1, "nan", "inf"], [0, 30.0]),
    ("grant_renewal_days", [-1, "nan", "inf", 4000], [0, 7.0, 30]),
]


@pytest.mark.parametrize(("field", "refused", "accepted"), NUMBERS, ids=[n[0] for n in NUMBERS])
def test_number_settings_are_range_checked(tmp_path, field, refused, accepted):
    for value in refused:
        with pytest.raises(ValidationError):
            Settings(data_dir=tmp_path, **{field: value})
    for value in accepted:
        assert getattr(Settings(data_dir=tmp_path, **{field: value}), field) == value


def test_every_number_setting_is_range_checked():
    numeric = {name for name, info in Settings.model_fields.items() if info.annotation in (int, float)}
    assert numeric == {n[0] for n in NUMBERS}
    for name in numeric:
        assert Settings.model_fields[name].metadata, f"{name} has no bounds"


def test_get_settings_turns_validation_errors_into_settings_errors(environment):
    environment.setenv("HUB_SYNC_WORKERS", "-1")
    with pytest.raises(SettingsError, match=r"^HUB_SYNC_WORKERS='-1': Input should be greater than or equal to 0$"):
        get_settings()


def test_create_app_reports_an_unusable_jwks_url_as_a_setting(tmp_path):
    from hub.api.main import create_app
    from hub.plugins import PluginRegistry

    settings = Settings(data_dir=tmp_path, secret_key="k").model_copy(update={"jwt_jwks_url": "ftp://x/jwks"})
    with pytest.raises(SettingsError, match="HUB_JWT_JWKS_URL='ftp://x/jwks'"):
        create_app(settings, PluginRegistry())


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "0"])
def test_serve_refuses_a_port_out_of_range(environment, port):
    """(0 binds a random port, while the hub said it served at :0 and
    registered webhooks at http://127.0.0.1:0, its public URL by default.)"""
    result = invoke("serve", "--port", port)
    assert result.exit_code == 2 and type(result.exception) is SystemExit
    assert "1<=x<=65535" in result.output and "Traceback" not in result.output


def test_new_plugin_into_a_directory_that_cannot_be_made_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_interactive", lambda: False)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    line = assert_one_line_error(invoke("new-plugin", "acme", "--output-dir", str(a_file / "below")),
                                 "cannot create", str(a_file / "below"))
    assert "hub-acme" in line
    # The real process: copier's own complaints are not shown either.
    command = [sys.executable, "-m", "hub.cli", "new-plugin", "acme", "--output-dir", str(a_file / "below")]
    done = subprocess.run(command, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [line], done.stderr


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("HUB_SYNC_EXECUTOR", "queue", "HUB_SYNC_EXECUTOR=queue needs PostgreSQL"),
    ("HUB_JWT_JWKS_URL", "garbage", "HUB_JWT_JWKS_URL='garbage'"),
    ("HUB_DATABASE_URL", "mysql://u@h/db", "HUB_DATABASE_URL"),
])
def test_hub_serve_exits_at_once_with_one_line(tmp_path, name, value, expected):
    """The real process: no traceback, no 30 s of pool errors before it."""
    env = subprocess_env(tmp_path, HUB_DATA_DIR=str(tmp_path / "data"), HUB_SECRET_KEY="k", **{name: value})
    for key in ("HUB_DATABASE_URL", "HUB_SYNC_EXECUTOR", "HUB_JWT_JWKS_URL"):
        if key != name:
            env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "hub.cli", "serve", "--port", "8765"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert expected in done.stderr


def test_a_lost_secret_key_is_not_made_anew_beside_the_secrets_it_encrypted(environment, tmp_path):
    """secret.key deleted (or a second machine on the same database): a new key was made
    without a word, and every connection's credentials became unreadable."""
    from hub.runtime import Hub
    from tests.sync_support import make_connection

    environment.delenv("HUB_SECRET_KEY")
    get_settings.cache_clear()
    settings = get_settings()
    hub = Hub(settings)
    hub.migrate()
    assert invoke("org", "list").exit_code == 0  # an empty database: a key made on first run is fine
    make_connection(hub, "example", {"api_key": "sk_live_kept"})
    key_file = settings.data_dir / "secret.key"
    key = key_file.read_text()
    key_file.unlink()
    get_settings.cache_clear()
    assert_one_line_error(invoke("org", "list"), f"HUB_DATA_DIR={settings.data_dir} has no secret.key",
                          "holds 1 connection whose credentials", "restore secret.key")
    assert not key_file.exists()
    environment.setenv("HUB_SECRET_KEY", key)  # the key given another way
    get_settings.cache_clear()
    assert invoke("org", "list").exit_code == 0


def test_serve_refuses_a_port_in_use_in_one_line(environment):
    """It printed its banner, started the whole hub, then stopped on uvicorn's bind error."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_one_line_error(invoke("serve", "--port", str(port)), f"cannot listen on 127.0.0.1:{port}",
                              "choose another with --port")


def test_serve_on_another_port_names_it_in_webhook_and_callback_urls(environment, monkeypatch):
    """make run PORT=9000 registered webhooks at :8000, where nothing listened."""
    import uvicorn

    from hub.services.oauth import callback_url
    from hub.testing import free_port

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app, **kwargs))
    port = free_port()
    result = invoke("serve", "--port", str(port))
    assert result.exit_code == 0, result.output
    hub = served["app"].state.hub
    assert hub.webhook_url("stripe").startswith(f"http://127.0.0.1:{port}/api/v1/integrations/webhooks/")
    assert callback_url(hub, "shopify").startswith(f"http://127.0.0.1:{port}/")
    environment.setenv("HUB_PUBLIC_URL", "https://hub.example.com")  # said: kept
    get_settings.cache_clear()
    assert invoke("serve", "--port", str(port)).exit_code == 0
    assert served["app"].state.hub.webhook_url("stripe").startswith("https://hub.example.com/")


def test_a_mistyped_setting_is_named_not_silently_ignored(environment, tmp_path):
    """HUB_DATABSE_URL was dropped without a word: the hub ran on the embedded SQLite."""
    environment.setenv("HUB_DATABSE_URL", f"sqlite:///{tmp_path / 'meant.db'}")
    environment.setenv("HUB_SECRETKEY", "k2")
    environment.setenv("HUB_EXAMPLE_ORIGIN", "http://127.0.0.1:9")  # a provider's own: fine
    environment.setenv("HUB_PLUGINS", "example")
    result = invoke("org", "list")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        "Warning: HUB_DATABSE_URL is not a hub setting (did you mean HUB_DATABASE_URL?); it is ignored",
        "Warning: HUB_SECRETKEY is not a hub setting (did you mean HUB_SECRET_KEY?); it is ignored"]


def test_hub_version():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"hub, version {version('hub-core')}"



@pytest.mark.parametrize(("secret_key", "jwt_secret", "warned"), [
    ("Zq9#k", "Jw7%", {"HUB_SECRET_KEY is 5 characters", "HUB_JWT_SECRET is 4 bytes"}),
    ("Zq9#k" * 4, "Jw7%" * 8, set()),
])
def test_secrets_too_short_are_warned_about_at_start_without_their_values(tmp_path, caplog, secret_key, jwt_secret,
                                                                        warned):
    import logging

    from fastapi.testclient import TestClient

    from hub.api.main import create_app
    from hub.plugins import PluginRegistry

    settings = Settings(data_dir=tmp_path, secret_key=secret_key, jwt_secret=jwt_secret, run_scheduler=False)
    with caplog.at_level(logging.WARNING, logger="hub"), TestClient(create_app(settings, PluginRegistry())) as client:
        assert client.get("/healthz").status_code == 200
    lines = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert {next((w for w in warned if w in line), line) for line in lines if "HUB_" in line} == warned
    assert not any(secret_key in line or jwt_secret in line for line in lines)
