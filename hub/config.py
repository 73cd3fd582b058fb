"""Operator settings, from ``HUB_*`` environment variables."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Settings whose values are not repeated in error messages (a database URL holds its password).
SECRET_SETTINGS = frozenset(("database_url", "secret_key", "previous_secret_key", "jwt_secret"))
#: The databases the hub runs on (``postgres://`` is PostgreSQL too).
DATABASES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
DATABASE_EXAMPLES = "sqlite:////path/to/hub.db or postgresql://user:password@host/db"
#: Why ``HUB_SYNC_EXECUTOR=queue`` is refused without PostgreSQL (by the settings, and by
#: :func:`hub.sync.worker.executor_kind` for settings made without validation).
QUEUE_NEEDS_POSTGRESQL = ("HUB_SYNC_EXECUTOR=queue needs PostgreSQL (HUB_DATABASE_URL=postgresql://...): its jobs "
                          "are procrastinate's, kept in PostgreSQL; on SQLite use local (the default)")


#: Shortest ``HUB_SECRET_KEY`` (and previous key) not warned about: the key is stretched
#: with one SHA-256, so a short one is guessed by trying.
MIN_SECRET_KEY_CHARS = 16
#: Shortest ``HUB_JWT_SECRET`` not warned about: RFC 7518 (3.2) asks an HS256 key
#: as long as its hash, 256 bits.
MIN_JWT_SECRET_BYTES = 32

#: Bound of settings in seconds whose arithmetic with dates must not overflow.
_TEN_YEARS = 10 * 365 * 86_400

class SettingsError(ValueError):
    """Settings the hub cannot use. The message has a line per setting, each
    naming its ``HUB_`` variable."""


def _seconds(default: float, **bounds: float) -> float:
    return Field(default, allow_inf_nan=False, **bounds)


class Settings(BaseSettings):
    """The hub's settings. Every field reads ``HUB_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    data_dir: Path = Path.home() / ".hub"
    database_url: str | None = None
    secret_key: str | None = None
    #: A key replaced by ``secret_key``: still decrypts what it encrypted (until ``hub reencrypt``).
    previous_secret_key: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = Field(1_048_576, ge=1)
    jwt_secret: str | None = None
    jwt_jwks_url: str | None = None
    jwt_org_claim: str = "org"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    oauth_state_ttl_seconds: int = Field(600, ge=1, le=_TEN_YEARS)
    #: Comma list of hosts an OAuth redirect_uri may name (empty: the public URL's host and
    #: loopback hosts; "*": any host).
    oauth_return_hosts: str = ""
    #: Comma list of origins (``https://app.example.com``) whose pages may call the API from the
    #: browser (CORS; with a JWT or key in the Authorization header). Empty: none; "*": any.
    cors_origins: str = ""
    refresh_margin_seconds: int = Field(120, ge=0, le=_TEN_YEARS)  # 0: refreshed once expired
    #: A grant whose refresh token expires within this many days is refreshed even if nothing calls
    #: the provider (a quiet connection would lapse: Shopify's refresh tokens last 90 days).
    grant_renewal_days: float = Field(7.0, ge=0, le=3650)
    scheduler_interval_seconds: float = _seconds(30.0, ge=0.1)  # (less would spin the scheduler)
    run_scheduler: bool = True
    #: "local" (in-process) or "queue" (procrastinate jobs: PostgreSQL only); default by database.
    sync_executor: Literal["local", "queue"] | None = None
    #: How long deleted records are kept (webhook deletes, push), finished sync runs (the logs), and
    #: applied or ignored webhook events; 0: forever (at most 100 years).
    sync_tombstone_days: int = Field(30, ge=0, le=36_500)
    sync_log_retention_days: int = Field(90, ge=0, le=36_500)
    webhook_retention_days: int = Field(30, ge=0, le=36_500)
    #: How long events for the app's endpoints are kept (delivered, given up on, or held by a disabled one).
    event_retention_days: int = Field(30, ge=0, le=36_500)
    #: Whether an event endpoint may be at a loopback, private or link-local address (false: refused
    #: when registered and when sent, so that an organization's key cannot probe the hub's network).
    event_private_urls: bool = True
    #: A queue worker silent this long is dead: its runs go to the others.
    sync_stalled_seconds: float = _seconds(30.0, ge=0.1)
    sync_workers: int = Field(2, ge=0)  # sync jobs each API process runs itself in queue mode (0: only `hub worker`)
    #: Runs the API process executes at once in embedded (local) mode; the others wait, queued.
    sync_local_concurrency: int = Field(4, ge=1)
    http_retry_attempts: int = Field(6, ge=0)  # tries after errors (0 or 1: no retry)
    http_retry_base_delay: float = _seconds(0.5, ge=0)
    http_timeout_seconds: float = _seconds(30.0, gt=0)  # one provider request without an answer (connect: at most 10)
    http_deadline_seconds: float = _seconds(90.0, gt=0)  # one call, its retries and waits included
    http_max_response_bytes: int = Field(32 * 2**20, ge=1)  # one provider answer, decoded
    slice_cache_seconds: float = _seconds(30.0, ge=0)  # a page handed out in slices is kept so long (0: not)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if not url:
            return url
        import sqlalchemy as sa

        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError:
            raise ValueError(f"not a database URL (use {DATABASE_EXAMPLES})") from None
        if parsed.get_backend_name() not in DATABASES:
            raise ValueError(f"{parsed.get_backend_name()}: the hub runs on SQLite or PostgreSQL only "
                             f"({DATABASE_EXAMPLES})")
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:") or database.startswith("file::memory:") or "mode=memory" in url:
                # Gone when the process ends: an organization `hub org create` made, with its key.
                raise ValueError(f"an in-memory SQLite database keeps nothing between commands: give a file "
                                 f"({DATABASE_EXAMPLES})")
            if not database.startswith(("/", "file:")):
                raise ValueError(f"the SQLite path {database!r} is relative, so each command would use the file "
                                 f"of the directory it runs in: give an absolute one (sqlite:////abs/path/hub.db)")
        return url

    @field_validator("jwt_jwks_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url and not is_http_url(url):
            raise ValueError("not an http:// or https:// URL (the identity provider's JWKS, "
                             "https://issuer.example.com/.well-known/jwks.json)")
        return url

    @field_validator("public_url")
    @classmethod
    def _public_http_url(cls, url: str) -> str:
        if not is_http_url(url) or urlsplit(url).query or urlsplit(url).fragment:
            raise ValueError("not an http:// or https:// URL without a query (where the providers and browsers "
                             "reach this hub: https://hub.example.com); webhook and OAuth callback URLs are made "
                             "from it")
        return url

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        cls.origins_of(value)
        return value

    @staticmethod
    def origins_of(value: str) -> list[str]:
        """``HUB_CORS_ORIGINS`` as browsers write origins (scheme and host in
        lower case, no default port), which the CORS check compares exactly.

        :raises ValueError: an entry that is not an origin.
        """
        origins = []
        for origin in (part.strip().rstrip("/") for part in value.split(",")):
            if not origin or origin == "*":
                origins += [origin] if origin else []
                continue
            parts = urlsplit(origin)
            try:
                port = parts.port
            except ValueError:
                port, parts = None, parts._replace(netloc="")
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
                # A browser sends its page's origin whole: "app.example.com" would never match it.
                raise ValueError(f"{origin!r} is not an origin: write scheme and host, and the port if not the "
                                 f"default (https://app.example.com, http://localhost:3000), or *")
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            default = {"http": 80, "https": 443}[scheme]
            origins.append(f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else ""))
        return origins

    @field_validator("sync_executor", mode="before")
    @classmethod
    def _executor_name(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None  # (empty: chosen by the database)
        return value

    @model_validator(mode="after")
    def _queue_needs_postgresql(self) -> Settings:
        if self.sync_executor == "queue" and self.database_backend != "postgresql":
            raise ValueError(QUEUE_NEEDS_POSTGRESQL)
        return self

    @property
    def database_backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        if not self.database_url:
            return "sqlite"
        import sqlalchemy as sa

        return DATABASES[sa.engine.make_url(self.database_url).get_backend_name()]

    def weak_secrets(self) -> list[str]:
        """Warnings about secrets set too short to be safe, a line each (the
        values are not repeated). Taken still: refusing them would stop a
        deployment that runs with them today."""
        weak = []
        for name, value in (("HUB_SECRET_KEY", self.secret_key), ("HUB_PREVIOUS_SECRET_KEY", self.previous_secret_key)):
            if value and len(value) < MIN_SECRET_KEY_CHARS:
                weak.append(f"{name} is {len(value)} characters long: a key this short can be guessed, and with it "
                            f"every stored credential read; use at least {MIN_SECRET_KEY_CHARS} random characters")
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            weak.append(f"HUB_JWT_SECRET is {len(self.jwt_secret.encode())} bytes long: HS256 asks at least "
                        f"{MIN_JWT_SECRET_BYTES} (RFC 7518), else a token for any organization can be forged by "
                        f"guessing it")
        return weak

    def ensure_data_dir(self) -> Path:
        """The data directory, created (the owner's only) when missing.

        :raises SettingsError: it is not a directory, or cannot be created."""
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise SettingsError(f"HUB_DATA_DIR={self.data_dir}: not a directory") from None
        except OSError as exc:
            raise SettingsError(f"HUB_DATA_DIR={self.data_dir}: cannot create the data directory "
                                f"({exc.strerror or exc})") from None
        return self.data_dir

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.ensure_data_dir() / 'hub.db'}"

    def provider_settings(self, provider: str) -> dict[str, str]:
        """``HUB_<PROVIDER>_<KEY>=value`` variables as ``{"key": value}``."""
        prefix = f"HUB_{provider.upper()}_"
        return {
            key[len(prefix):].lower(): value
            for key, value in os.environ.items()
            if key.startswith(prefix)
        }


def is_http_url(url: str) -> bool:
    """An absolute http:// or https:// URL with a host, its port (if any) a number."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError:  # (an unbalanced "[::1" too)
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def unknown_variables(providers: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """``HUB_*`` variables that are neither a setting nor ``HUB_<PROVIDER>_*`` of
    a loaded provider, each with the setting it may be a typo of: ignored, they
    leave the default in force (``HUB_DATABSE_URL`` runs on the embedded SQLite)."""
    settings = [f"HUB_{name.upper()}" for name in Settings.model_fields] + ["HUB_PLUGINS"]  # (the registry's)
    prefixes = tuple(f"HUB_{provider.upper()}_" for provider in providers)
    notes = []
    for name in sorted(environ if environ is not None else os.environ):
        if not name.startswith("HUB_") or name in settings or name.startswith(prefixes):
            continue
        close = difflib.get_close_matches(name, settings, n=1, cutoff=0.8)
        notes.append(f"{name} is not a hub setting" + (f" (did you mean {close[0]}?)" if close else ""))
    return notes


def describe_errors(error: ValidationError) -> str:
    """A line per setting ``error`` refuses, naming its ``HUB_`` variable (and
    the value given, unless it is a secret)."""
    lines: dict[str, str] = {}
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:
            lines.setdefault(message, message)
            continue
        field = str(item["loc"][0])
        name = f"HUB_{field.upper()}"
        given = item.get("input")
        if field in SECRET_SETTINGS or not isinstance(given, str | int | float | bool):
            lines.setdefault(name, f"{name}: {message}")
        else:
            lines.setdefault(name, f"{name}={given!r}: {message}")
    return "\n".join(lines.values())


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment.

    :raises SettingsError: a setting has a value the hub cannot use."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None
