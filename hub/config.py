"""Operator settings, from ``HUB_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The hub's settings. Every field reads ``HUB_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    data_dir: Path = Path.home() / ".hub"
    database_url: str | None = None
    secret_key: str | None = None
    #: A key replaced by ``secret_key``: still decrypts what it encrypted (until ``hub reencrypt``).
    previous_secret_key: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 1_048_576
    jwt_secret: str | None = None
    jwt_jwks_url: str | None = None
    jwt_org_claim: str = "org"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    oauth_state_ttl_seconds: int = 600
    #: Comma list of hosts an OAuth redirect_uri may name (empty: the public URL's host and
    #: loopback hosts; "*": any host).
    oauth_return_hosts: str = ""
    #: Comma list of origins (``https://app.example.com``) whose pages may call the API from the
    #: browser (CORS; with a JWT or key in the Authorization header). Empty: none; "*": any.
    cors_origins: str = ""
    refresh_margin_seconds: int = 120
    scheduler_interval_seconds: float = 30.0
    run_scheduler: bool = True
    sync_executor: str | None = None  # "local" (in-process) or "queue" (procrastinate); default by database
    sync_tombstone_days: int = 30  # deleted records are kept this long (webhook deletes, push), 0: forever
    sync_log_retention_days: int = 90  # finished sync runs (the logs) are kept this long, 0: forever
    webhook_retention_days: int = 30  # applied or ignored webhook events are kept this long, 0: forever
    sync_stalled_seconds: float = 30.0  # a queue worker silent this long is dead: its runs go to the others
    sync_workers: int = 2  # sync jobs each API process runs itself in queue mode (0: only `hub worker`)
    #: Runs the API process executes at once in embedded (local) mode; the others wait, queued.
    sync_local_concurrency: int = 4
    http_retry_attempts: int = 6
    http_retry_base_delay: float = 0.5
    http_timeout_seconds: float = 30.0  # one provider request without an answer (connect: at most 10)
    http_deadline_seconds: float = 90.0  # one call, its retries and waits included
    http_max_response_bytes: int = 32 * 2**20  # one provider answer, decoded

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # (new directories: the owner's only)
        return f"sqlite:///{self.data_dir / 'hub.db'}"

    def provider_settings(self, provider: str) -> dict[str, str]:
        """``HUB_<PROVIDER>_<KEY>=value`` variables as ``{"key": value}``."""
        prefix = f"HUB_{provider.upper()}_"
        return {
            key[len(prefix):].lower(): value
            for key, value in os.environ.items()
            if key.startswith(prefix)
        }


@lru_cache
def get_settings() -> Settings:
    return Settings()
