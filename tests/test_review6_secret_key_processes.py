"""Review 6: two hub processes on one database (an API and a worker on two
machines sharing PostgreSQL), each without HUB_SECRET_KEY, started before any
connection exists, each make a secret.key of their own without a word: what
one encrypts the other cannot read (every sync of the worker fails with
credentials_unreadable). The check at startup only looks for connections
already stored."""
from __future__ import annotations

from hub.config import SettingsError
from hub.runtime import Hub


def test_two_processes_on_one_database_never_seal_secrets_with_keys_of_their_own(tmp_path, database_url, monkeypatch,
                                                                                 example_registry):
    from hub.config import Settings

    for key in ("HUB_PLUGINS", "HUB_DATABASE_URL", "HUB_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    api = Hub(Settings(data_dir=tmp_path / "api-machine", database_url=database_url, secret_key=None),
              example_registry)
    api.migrate()
    try:
        worker = Hub(Settings(data_dir=tmp_path / "worker-machine", database_url=database_url, secret_key=None),
                     example_registry)
    except SettingsError:
        return  # refused at startup, naming the problem: fine
    sealed = api.cipher.encrypt('{"access_token": "at_live"}')
    # Either both use one key, or the second process must have refused to start.
    assert worker.cipher.decrypt(sealed) == '{"access_token": "at_live"}'
