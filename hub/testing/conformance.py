"""The provider conformance suite: a plugin checked against the contract of
:mod:`hub.hookspecs`, through the hub's real REST API and the core's
dispatcher, against the plugin's fake server over HTTP on loopback.

A plugin package activates it with one test class (the ``hub`` pytest plugin,
installed with the core, supplies the fixtures)::

    from hub.testing.conformance import ConformanceSuite, ConformanceTarget
    from hub_acme import testing as fake

    class TestAcmeConformance(ConformanceSuite):
        target = ConformanceTarget(
            provider="acme",
            fake_app=fake.create_app,
            credentials={"api_key": fake.API_KEY, "webhook_secret": fake.WEBHOOK_SECRET},
            seed=fake.seed,
            samples={"contacts": {"name": "Ada Lovelace"}},
            webhook=fake.conformance_webhook,
        )

Every check is also a plain function (``check_*``) taking a
:class:`Harness`, for use outside the class. A failed check says what to fix.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, NoReturn
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hub.models import Connection
from hub.plugins import info_problems, schema_problems
from hub.services.records import MAX_PAGE_SIZE
from hub.sync.store import record_hash
from hub.testing.fakes import Scripted
from hub.types import (CONNECTION_BROKEN, CONNECTION_REPAIRED, CONNECTION_WARNING, AuthFailed, EntityField,
                       EntitySchema, HubError, NotFound, Page, ValidationFailed, WebhookEvent, WebhookRequest)

API_PREFIX = "/api/v1/integrations"
EVENT_ACTIONS = {"created", "updated", "deleted", "changed", CONNECTION_BROKEN, CONNECTION_REPAIRED,
                 CONNECTION_WARNING}
MISSING_ID = "conformance-missing-0000"
UNKNOWN_ENTITY = "conformance_no_such_entity"
WRITE_HOOKS = {"create_record": "supports_create", "update_record": "supports_update",
               "delete_record": "supports_delete"}

Seed = Callable[[Any, str, int], "list[str] | None"]
WebhookMaker = Callable[["Harness", str], "tuple[dict[str, str], bytes] | None"]


class ConformanceError(pytest.fail.Exception):
    """A conformance check failed; the message says what to fix. Reported by
    pytest as a failure without a traceback."""


def fail(message: str) -> NoReturn:
    raise ConformanceError(message, pytrace=False)


@dataclass
class ConformanceTarget:
    """What the suite needs to know about one provider plugin.

    :param provider: the provider id (the entry point name and ``ProviderInfo.name``).
    :param fake_app: builds a fresh ASGI app of the provider's fake server; the
        suite serves it on loopback and points the provider at it with the
        ``origin`` setting.
    :param plugin: the plugin module; ``None`` loads the installed entry point
        ``hub.providers:<provider>`` (what an operator's hub does).
    :param credentials: what ``POST /connections`` sends for an API-key
        provider (include the webhook secret when deliveries are signed with
        a per-connection secret).
    :param config: the connection's non-secret config.
    :param settings: operator settings, exported as ``HUB_<PROVIDER>_<KEY>``
        (OAuth ``client_id``/``client_secret``); ``origin`` defaults to the fake.
    :param connect: creates the connection for OAuth or Link providers, or any
        provider whose fake needs more than credentials: called with the
        :class:`Harness`, returns the connection as the API shows it
        (``harness.oauth_connect()``, ``harness.link_exchange(token)``).
        OAuth providers may omit it when their fake's authorize endpoint
        redirects straight back with a code (the suite plays the user).
    :param authorize_params: extra query parameters of the OAuth start (``shop``).
    :param bad_credentials: secrets the provider refuses; by default each
        string secret of the connection with ``invalid-`` prepended.
    :param seed: ``seed(fake_app, entity, count)`` creates ``count`` records of
        ``entity`` on the fake and returns their ids (``None`` when the fake
        cannot create that entity).
    :param samples: per writable entity, the data of a record to create.
    :param updates: per updatable entity, the change to apply; by default the
        first writable text field of the sample gets `` (updated)`` appended.
    :param webhook: ``webhook(harness, kind)`` returns ``(headers, body)`` of a
        delivery signed as the provider would sign it for the connection, with
        a new event id on each call; ``kind`` is ``"valid"`` or ``"stale"``
        (signed long ago; return ``None`` when the provider signs no time).
        ``harness.delivery_url`` is the URL it will be posted to, for a
        provider that signs the URL too (``WebhookRequest.url``).
    :param page_size: the page size the pagination checks ask for.
    :param expire_tokens: ``expire_tokens(fake_app)`` makes the fake refuse
        every access token it issued (401, as when they expire), not its
        refresh tokens; required of a plugin implementing
        ``refresh_credentials``, which the suite then checks through the API.
    """

    provider: str
    fake_app: Callable[[], Any]
    plugin: types.ModuleType | None = None
    credentials: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    connect: Callable[[Harness], dict[str, Any]] | None = None
    authorize_params: dict[str, str] = field(default_factory=dict)
    bad_credentials: dict[str, Any] | None = None
    seed: Seed | None = None
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhook: WebhookMaker | None = None
    page_size: int = 3
    expire_tokens: Callable[[Any], None] | None = None


# ---------------------------------------------------------------- loading


@dataclass
class Loaded:
    registry: Any
    record: Any
    provider: Any
    entry_point: Any


_loaded: dict[int, tuple[ConformanceTarget, Loaded]] = {}


def load(target: ConformanceTarget) -> Loaded:
    """Load the target's plugin the way the hub does (cached per target)."""
    cached = _loaded.get(id(target))
    if cached is not None and cached[0] is target:
        return cached[1]
    from hub.plugins import ENTRY_POINT_GROUP, DuplicateProviderError, PluginRegistry

    entry_points = [ep for ep in _entry_points(ENTRY_POINT_GROUP)
                    if ep.name == target.provider
                    or (target.plugin is not None and ep.value == target.plugin.__name__)]
    if target.plugin is None:
        try:
            registry = PluginRegistry.discover([target.provider])
        except DuplicateProviderError as exc:
            fail(str(exc))
    else:
        registry = PluginRegistry()
        registry.register(target.plugin, target.provider)
    record = next((r for r in registry.records if r.name == target.provider), None)
    loaded = Loaded(registry, record, record.provider if record else None,
                    entry_points[0] if entry_points else None)
    _loaded[id(target)] = (target, loaded)
    return loaded


def _entry_points(group: str) -> list[Any]:
    import importlib.metadata

    return list(importlib.metadata.entry_points(group=group))


def provider_of(target: ConformanceTarget) -> Any:
    """The loaded :class:`hub.plugins.Provider`, or a failure naming why it did not load."""
    loaded = load(target)
    if loaded.record is None or not loaded.record.module:  # no record, or "HUB_PLUGINS names a missing one"
        fail(f"no plugin is installed under the entry point hub.providers:{target.provider}: declare "
             f'[project.entry-points."hub.providers"] {target.provider} = "hub_{target.provider}" in '
             f"pyproject.toml and `pip install -e .` the package")
    if loaded.record.error:
        fail(f"the hub refused to load plugin {target.provider!r}: {loaded.record.error}")
    return loaded.provider


def entity_names(target: ConformanceTarget) -> list[str]:
    try:
        return sorted(provider_of(target).schemas)
    except (ConformanceError, Exception):  # reported by the loading check, not at collection
        return []


# ---------------------------------------------------------------- harness


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Harness:
    """A running hub (SQLite, served on loopback) with one connection of the
    target provider, its fake served on loopback, and a second
    :class:`hub.runtime.Hub` for calling hooks directly.

    - ``api``: an ``httpx.Client`` on ``/api/v1/integrations`` with the
      organization's API key.
    - ``connection``: the connection as the API shows it.
    - ``fake_app`` / ``fake_url``: the fake server and where it listens.
    - ``provider``: the loaded :class:`hub.plugins.Provider`.
    """

    def __init__(self, target: ConformanceTarget, data_dir: Path):
        self.target = target
        self.data_dir = Path(data_dir)
        self._stack = contextlib.ExitStack()
        self.connection: dict[str, Any] = {}
        #: The URL the next webhook delivery goes to (set before the target's ``webhook`` makes it).
        self.delivery_url = ""

    # -- lifecycle

    def start(self) -> Harness:
        from hub.api.main import create_app
        from hub.config import Settings
        from hub.runtime import Hub
        from hub.services.orgs import create_organization
        from hub.testing import free_port, serve

        target = self.target
        self.provider = provider_of(target)
        self.registry = load(target).registry
        try:
            self.fake_app = target.fake_app()
            # Served through Scripted: a check may answer the next request itself (a 429).
            self.scripted = Scripted(self.fake_app)
            self.fake_url = self._stack.enter_context(serve(self.scripted))
            settings = {"origin": self.fake_url, **target.settings}
            prefix = f"HUB_{target.provider.upper()}_"
            self._stack.enter_context(_environ({prefix + k.upper(): str(v) for k, v in settings.items()}))
            port = free_port()
            self.settings = Settings(
                data_dir=self.data_dir, database_url=f"sqlite:///{self.data_dir / 'hub.db'}",
                secret_key="conformance-secret-key", public_url=f"http://127.0.0.1:{port}",
                run_scheduler=False, http_retry_attempts=3, http_retry_base_delay=0.05,
            )
            self.app = create_app(self.settings, self.registry)
            self.hub_url = self._stack.enter_context(serve(self.app, port=port))
            self.hub = self.app.state.hub
            with self.hub.session() as session:
                organization, key = create_organization(session, "conformance")
            self.organization_id = organization.id
            self.api = httpx.Client(base_url=self.hub_url + API_PREFIX, timeout=30,
                                    headers={"Authorization": f"Bearer {key}"})
            self._stack.callback(self.api.close)
            self.loop = asyncio.new_event_loop()
            self._stack.callback(self.loop.close)
            self.direct = Hub(self.settings, self.registry)
            self._stack.callback(lambda: self.loop.run_until_complete(self.direct.close()))
            self.connection = self._connect()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stack.close()

    def _connect(self) -> dict[str, Any]:
        target = self.target
        if target.connect is not None:
            connection = target.connect(self)
        elif self.provider.info.auth_type == "api_key":
            connection = self.create_connection(target.credentials, target.config)
        elif self.provider.info.auth_type == "oauth2":
            connection = self.oauth_connect(target.authorize_params)
        else:
            fail(f"{target.provider} connects with {self.provider.info.auth_type}: give "
                 f"ConformanceTarget(connect=...) a function that creates the connection through the API "
                 f"(e.g. harness.link_exchange(public_token, link_token=harness.link_token())) and returns it")
        if not isinstance(connection, dict) or "id" not in connection:
            fail(f"connect() returned {connection!r}: return the connection as the API shows it "
                 f"(the 'connection' of the response)")
        return connection

    # -- connecting through the API

    def create_connection(self, credentials: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.api.post("/connections", json={
            "provider": self.target.provider, "credentials": credentials, "config": config or {}})
        if response.status_code != 201:
            fail(f"creating a {self.target.provider} connection with the target's credentials answered "
                 f"{_describe(response)}: the fake must accept ConformanceTarget.credentials, and "
                 f"test_connection must succeed with them")
        return response.json()["connection"]

    def oauth_connect(self, params: dict[str, str] | None = None) -> dict[str, Any]:
        """Run the OAuth flow through the API, playing the user at the fake's
        authorization endpoint (which must redirect back at once)."""
        response = self.api.get(f"/oauth/{self.target.provider}/authorize", params=params or {})
        if response.status_code != 200:
            fail(f"GET /oauth/{self.target.provider}/authorize answered {_describe(response)}: "
                 f"authorization_url must return the provider's authorize URL")
        url = response.json()["authorization_url"]
        consent = httpx.get(url, follow_redirects=False, timeout=30)
        location = consent.headers.get("location", "")
        if consent.status_code not in (301, 302, 303, 307) or "/oauth/" not in location:
            fail(f"the fake's authorization endpoint answered HTTP {consent.status_code} to {_path(url)}: "
                 f"make it redirect at once to redirect_uri with code and state (the suite plays the "
                 f"user), or give ConformanceTarget(connect=...)")
        callback = httpx.get(location, timeout=30)
        if callback.status_code != 200:
            fail(f"the OAuth callback answered {_describe(callback)}: exchange_code must turn the fake's "
                 f"code into Credentials")
        return callback.json()["connection"]

    def link_token(self, user_id: str = "conformance-user", options: dict[str, Any] | None = None) -> str:
        """A link token of the suite's organization (``POST /link/{provider}/token``)."""
        response = self.api.post(f"/link/{self.target.provider}/token",
                                 json={"user_id": user_id, "options": options or {}})
        if response.status_code != 200:
            fail(f"POST /link/{self.target.provider}/token answered {_describe(response)}: "
                 f"create_link_token must return {{'link_token': ...}}")
        return response.json()["link_token"]

    def link_exchange(self, public_token: str, metadata: dict[str, Any] | None = None, *,
                      link_token: str) -> dict[str, Any]:
        """Exchange a public token the fake made from ``link_token`` (as the widget would)."""
        response = self.api.post(f"/link/{self.target.provider}/exchange",
                                 json={"public_token": public_token, "link_token": link_token,
                                       "metadata": metadata or {}})
        if response.status_code != 201:
            fail(f"POST /link/{self.target.provider}/exchange answered {_describe(response)}: "
                 f"exchange_public_token must turn the fake's public token into Credentials")
        return response.json()["connection"]

    def other_organization(self) -> httpx.Client:
        """An API client of a new organization (with no connection yet)."""
        from hub.services.orgs import create_organization

        with self.hub.session() as session:
            _organization, key = create_organization(session, f"conformance-{uuid.uuid4().hex[:8]}")
        client = httpx.Client(base_url=self.hub_url + API_PREFIX, timeout=30,
                              headers={"Authorization": f"Bearer {key}"})
        self._stack.callback(client.close)
        return client

    # -- records through the API

    def records_url(self, entity: str, record_id: str | None = None) -> str:
        url = f"/connections/{self.connection['id']}/entities/{entity}/records"
        return f"{url}/{record_id}" if record_id is not None else url

    def list_pages(self, entity: str, page_size: int, since: str | None = None,
                   max_pages: int = 300, first_only: bool = False) -> list[list[dict[str, Any]]]:
        """Follow ``next_cursor`` through the API from the first page to the
        last (``first_only``: the first page alone)."""
        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if cursor:
                params["cursor"] = cursor
            if since:
                params["since"] = since
            response = self.api.get(self.records_url(entity), params=params)
            if response.status_code != 200:
                advice = ("list_records must return a Page for every cursor it handed out" if pages else
                          "list_records must return a Page (with no cursor: the first page)")
                fail(f"listing {entity!r} through the API (page {len(pages) + 1}, limit={page_size}"
                     f"{', since=' + since if since else ''}) answered {_describe(response)}: {advice}")
            body = response.json()
            pages.append(body["records"])
            cursor = body["next_cursor"]
            if cursor is None or first_only:
                return pages
            if cursor in seen:
                fail(f"list_records for {entity!r} returned the cursor {cursor!r} twice: each next_cursor "
                     f"must lead past the records already returned")
            seen.add(cursor)
            if len(pages) >= max_pages:
                fail(f"list_records for {entity!r} still returned a next_cursor after {max_pages} pages of "
                     f"{page_size}: return next_cursor=None on the last page (or, if the fake really holds "
                     f"that many records, start it with fewer)")

    def ids(self, entity: str, records: list[dict[str, Any]]) -> list[str]:
        id_field = self.provider.schema(entity).id_field
        missing = [r for r in records if r.get(id_field) in (None, "")]
        if missing:
            fail(f"a record of {entity!r} has no {id_field!r} (the schema's id_field): {_short(missing[0])}; "
                 f"set EntitySchema(id_field=...) to the field holding the provider's id")
        return [str(r[id_field]) for r in records]

    def seed(self, entity: str, count: int) -> list[str] | None:
        if self.target.seed is None:
            return None
        ids = self.target.seed(self.fake_app, entity, count)
        return None if ids is None else [str(i) for i in ids]

    # -- calling hooks directly

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def ctx(self, credentials: dict[str, Any] | None = None, connection_id: str | None = None) -> Any:
        """A :class:`~hub.context.ProviderContext` for the connection, built by
        :class:`hub.runtime.Hub`; with ``credentials``, for a copy of the
        connection holding those secrets instead."""
        from hub.models import Connection

        with self.direct.session() as session:
            row = session.get(Connection, self.connection["id"])
        if credentials is not None:
            row = Connection(id=connection_id or f"conformance-{uuid.uuid4().hex[:8]}",
                             organization_id=row.organization_id, provider=row.provider,
                             category=row.category, name=row.name, config=dict(row.config or {}),
                             credentials_encrypted=self.direct.cipher.encrypt_json(credentials))
        return self.direct.context(self.provider, row)

    def secrets(self) -> dict[str, Any]:
        from hub.models import Connection

        with self.direct.session() as session:
            row = session.get(Connection, self.connection["id"])
        return self.direct.cipher.decrypt_json(row.credentials_encrypted)

    def call(self, hook: str, **kwargs: Any) -> Any:
        """Call one of the provider's hooks through :meth:`hub.plugins.Provider.call`
        (no error wrapping: what the plugin raises is what comes out)."""
        return self.run(self.provider.call(hook, **kwargs))

    def schema(self, entity: str) -> Any:
        return self.provider.schema(entity)


def _describe(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"HTTP {response.status_code} {body.get('code')}: {body.get('error')}"
    except ValueError:
        return f"HTTP {response.status_code} {response.text[:200]!r}"


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _path(url: str) -> str:
    return url.split("?", 1)[0]


def _exception(exc: BaseException) -> str:
    name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    text = str(exc)
    return f"{name}: {text[:120]}" if text else name


# ---------------------------------------------------------------- checks: declarations


def check_plugin_loads(target: ConformanceTarget) -> None:
    """The hub loads the plugin and its entry point name is its provider id."""
    provider = provider_of(target)
    loaded = load(target)
    if provider.info.name != target.provider:
        fail(f"provider_info().name is {provider.info.name!r} but the target names {target.provider!r}")
    ep = loaded.entry_point
    if ep is not None and ep.name != provider.info.name:
        fail(f"the entry point is named {ep.name!r} but provider_info().name is {provider.info.name!r}: "
             f"they must be equal (the name is the provider id in every URL)")


def check_provider_info(target: ConformanceTarget) -> None:
    """``ProviderInfo`` is complete and consistent with the implemented hooks."""
    provider = provider_of(target)
    info = provider.info
    problems = []
    if not info.label.strip():
        problems.append("label is empty: give the provider's display name")
    if not info.category.strip() or info.category != info.category.strip().lower():
        problems.append(f"category {info.category!r} must be a non-empty lower-case word (crm, commerce, payments)")
    problems += info_problems(info, provider.implements)
    if info.auth_type == "api_key" and not info.credential_fields:
        problems.append("auth_type is 'api_key' but credential_fields is empty: declare the fields a user "
                        "types (EntityField('api_key', 'API key', required=True))")
    if not provider.schemas:
        problems.append("entity_schemas returned no entities: declare at least one EntitySchema")
    if provider.implements("verify_webhook") and not info.supports_webhooks:
        problems.append("verify_webhook is implemented but supports_webhooks is False: set it to True")
    if problems:
        fail(f"provider_info of {target.provider!r}: " + "; ".join(problems))


def check_entity_schema(target: ConformanceTarget, entity: str) -> None:
    """The entity's schema has fields, its id field among them, and valid types."""
    schema = provider_of(target).schema(entity)
    where = f"entity {entity!r}"
    if not schema.fields:
        fail(f"{where} declares no fields: list its fields as EntityField(...) in its EntitySchema, "
             f"including the id field {schema.id_field!r}")
    names = [f.name for f in schema.fields]
    problems = []
    duplicates = sorted(n for n, c in collections.Counter(names).items() if c > 1)
    if duplicates:
        problems.append(f"fields {duplicates} are declared twice")
    problems += schema_problems(schema)
    if not schema.label.strip():
        problems.append("its label is empty")
    for f in schema.fields:
        if f.required and f.readonly:
            problems.append(f"field {f.name!r} is both required and readonly: no create could satisfy it")
    if problems:
        fail(f"{where}: " + "; ".join(problems))


def check_write_hooks_match_flags(target: ConformanceTarget) -> None:
    """Every write an entity declares has its hook, and every write hook serves
    an entity that declares it; reads are implemented."""
    provider = provider_of(target)
    problems = []
    for hook, flag in WRITE_HOOKS.items():
        declaring = sorted(s.name for s in provider.schemas.values() if getattr(s, flag))
        if declaring and not provider.implements(hook):
            problems.append(f"{', '.join(declaring)} declare{'s' if len(declaring) == 1 else ''} {flag} but "
                            f"the plugin does not implement {hook}: implement it or set {flag}=False")
        if provider.implements(hook) and not declaring:
            problems.append(f"{hook} is implemented but no entity declares {flag}: the hub never calls it "
                            f"(it refuses writes the schema does not allow), so the schema says these "
                            f"entities are read-only while the plugin can write; set {flag}=True on the "
                            f"entities it writes, or remove the hook")
    for hook in ("list_records", "get_record"):
        if not provider.implements(hook):
            problems.append(f"{hook} is not implemented: every entity must be listed and fetched")
    if problems:
        fail(f"plugin {target.provider!r}: " + "; ".join(problems))


# ---------------------------------------------------------------- checks: through the API


def check_api_lists_provider(h: Harness) -> None:
    """``GET /providers``, ``/providers/{p}/entities`` and ``/plugins`` show the plugin."""
    name = h.target.provider
    providers = {p["name"]: p for p in h.api.get("/providers").json()["providers"]}
    if name not in providers:
        fail(f"GET /providers does not list {name!r} (it lists {sorted(providers)})")
    listed = providers[name]
    if listed["entities"] != sorted(h.provider.schemas) or listed["auth_type"] != h.provider.info.auth_type:
        fail(f"GET /providers shows {name!r} with entities {listed['entities']} and auth type "
             f"{listed['auth_type']!r}, not those of entity_schemas/provider_info")
    entities = h.api.get(f"/providers/{name}/entities").json()["entities"]
    for shown in entities:
        declared = h.schema(shown["name"])
        if [f["name"] for f in shown["fields"]] != [f.name for f in declared.fields]:
            fail(f"GET /providers/{name}/entities shows other fields for {shown['name']!r} than its schema")
    plugins = {p["name"]: p for p in h.api.get("/plugins").json()["plugins"]}
    if not plugins.get(name, {}).get("loaded"):
        fail(f"GET /plugins does not show {name!r} as loaded: {plugins.get(name)}")


def check_pagination(h: Harness, entity: str) -> None:
    """Following cursors page by page yields every record once, in pages no
    larger than asked."""
    size = h.target.page_size
    seeded = h.seed(entity, 2 * size + 2)
    # (The API hands a larger page out in slices: the hook is asked directly, page by page.)
    fixed = h.schema(entity).fixed_page_size
    cursor: str | None = None
    sliced = 0  # the API pages the provider's pages make, each cut in slices of size
    for number in range(1, 51):
        page = h.call("list_records", ctx=h.ctx(), entity=entity, cursor=cursor, page_size=size, filters={},
                      since=None)
        if not isinstance(page, Page):
            fail(f"list_records for {entity!r} returned {type(page).__name__}, expected hub.types.Page")
        if len(page.records) > max(size, fixed or 0):
            fail(f"list_records for {entity!r} returned {len(page.records)} records on page {number} for "
                 f"page_size={size}: pass page_size to the provider (clamped to its maximum), never "
                 f"return more than asked" + (f" (or than the schema's fixed_page_size={fixed})" if fixed else
                                              "; a provider whose pages cannot be sized declares "
                                              "EntitySchema(fixed_page_size=N)"))
        sliced += max(1, math.ceil(len(page.records) / size))
        cursor = page.next_cursor
        if not cursor:
            break
    pages = h.list_pages(entity, size)
    ids = [h.ids(entity, page) for page in pages]
    for number, page in enumerate(ids, 1):
        if len(page) > size:
            fail(f"the records API returned {len(page)} {entity!r} records on page {number} for limit={size}")
    flat = [i for page in ids for i in page]
    repeated = sorted(i for i, c in collections.Counter(flat).items() if c > 1)
    if repeated:
        fail(f"list_records for {entity!r} returned {repeated[:3]} more than once across {len(pages)} pages "
             f"of {size}: the next_cursor must continue after the last record of its page")
    if seeded:
        missing = [i for i in seeded if i not in set(flat)]
        if missing:
            expected = math.ceil(len(set(flat) | set(seeded)) / size)
            fail(f"list_records for {entity!r} returned next_cursor=None after {len(pages)} of {expected} "
                 f"pages ({len(flat)} records), and {len(missing)} of the {len(seeded)} records seeded on "
                 f"the fake never appeared (first: {missing[0]!r}): return the next page's cursor until "
                 f"the last page, and None only there")
    elif len(flat) <= size:
        pytest.skip(f"only {len(flat)} {entity} exist and seed() cannot create more: pagination unchecked")
    needed = max(1, math.ceil(len(flat) / size), sliced if fixed else 0)
    if len(pages) > needed + 1:
        fail(f"list_records for {entity!r} took {len(pages)} pages for {len(flat)} records with "
             f"page_size={size} (at most {needed + 1}): return full pages, and next_cursor=None on the last")
    response = h.api.get(f"/connections/{h.connection['id']}/entities/{entity}/records",
                         params={"limit": MAX_PAGE_SIZE})
    if response.status_code != 200:
        fail(f"listing {entity!r} with limit={MAX_PAGE_SIZE} (the API's largest) answered {_describe(response)}: "
             f"clamp page_size to the provider's maximum page size before sending it")


def check_sub_fields_declared(h: Harness, entity: str) -> None:
    """Objects whose sub-fields the schema lists hold no others but those its
    ``custom_fields`` matches: a tenant's mapping may name only these, so an
    incomplete list refuses paths to data the provider does send."""
    schema = h.schema(entity)
    shaped = [f for f in schema.fields if f.fields]  # (what a mapping may name inside them)
    if not shaped:
        pytest.skip(f"{entity} lists no sub-fields")
    h.seed(entity, 3)
    records = h.list_pages(entity, 100, first_only=True)[0]
    if not records:
        pytest.skip(f"no {entity} record to look into")
    for record in records:
        for shape in shaped:
            problem = _undeclared(shape, record.get(shape.name), shape.name, schema)
            if problem:
                fail(f"{entity}: {problem}: list every sub-field the provider sends in "
                     f"EntityField({shape.name!r}, fields=(...)), or none (an open object)")


def _undeclared(field: Any, value: Any, where: str, schema: Any) -> str | None:
    """The first key of ``value`` (an object, or an array's items) that
    ``field`` does not list, nor the schema's ``custom_fields`` matches."""
    items = value if field.type == "array" and isinstance(value, list) else [value]
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        at = f"{where}.{position}" if field.type == "array" else where
        for key, inner in item.items():
            declared = field.field(key)
            if declared is None and schema.custom(f"{at}.{key}"):
                continue
            if declared is None:
                return f"{at}.{key} is in the provider's records but not among the sub-fields of {where!r}"
            if declared.fields:
                problem = _undeclared(declared, inner, f"{at}.{key}", schema)
                if problem:
                    return problem
    return None


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, bool) or value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def check_since(h: Harness, entity: str) -> None:
    """With ``since``, exactly the records modified at or after it are listed."""
    schema = h.schema(entity)
    if not schema.supports_since:
        pytest.skip(f"{entity} does not declare supports_since")
    size = h.target.page_size
    if schema.updated_field is None:
        _check_since_by_clock(h, entity)
        return
    h.seed(entity, 2 * size + 2)
    records = [r for page in h.list_pages(entity, size) for r in page]
    stamps = {}
    for record, record_id in zip(records, h.ids(entity, records), strict=True):
        stamp = _as_datetime(schema.updated_value(record))
        if stamp is None:
            fail(f"records of {entity!r} carry no usable {schema.updated_field!r} (the schema's updated_field), "
                 f"e.g. {_short(record)}: return it as an ISO 8601 time or epoch seconds")
        stamps[record_id] = stamp
    if len(set(stamps.values())) < 2:
        pytest.skip(f"all {entity} share one modification time: since unchecked (seed more records)")
    ordered = sorted(stamps.values())
    threshold = ordered[len(ordered) // 2]
    if threshold == ordered[0]:
        threshold = next(s for s in ordered if s > ordered[0])
    expected = {i for i, s in stamps.items() if s >= threshold}
    got = [i for page in h.list_pages(entity, size, since=threshold.isoformat()) for i in h.ids(entity, page)]
    older = [i for i in got if i in stamps and stamps[i] < threshold]
    if older:
        fail(f"list_records for {entity!r} with since={threshold.isoformat()} returned {len(older)} records "
             f"modified before it (e.g. {older[0]!r} at {stamps[older[0]].isoformat()}): pass since to the "
             f"provider's modified-since filter, or declare supports_since=False")
    lost = sorted(expected - set(got))
    if lost:
        fail(f"list_records for {entity!r} with since={threshold.isoformat()} left out {len(lost)} records "
             f"modified at or after it (e.g. {lost[0]!r}): the filter must include records at exactly "
             f"`since` and keep paginating")


def _check_since_by_clock(h: Harness, entity: str) -> None:
    older = h.seed(entity, 2)
    if older is None:
        pytest.skip(f"{entity} has no updated_field and seed() cannot create it: since unchecked")
    time.sleep(1.1)
    threshold = datetime.now(timezone.utc).replace(microsecond=0)
    time.sleep(0.05)
    newer = h.seed(entity, 2) or []
    got = {i for page in h.list_pages(entity, h.target.page_size, since=threshold.isoformat())
           for i in h.ids(entity, page)}
    if set(older) & got or not set(newer) <= got:
        fail(f"list_records for {entity!r} with since={threshold.isoformat()} returned {sorted(got)}; records "
             f"created before it were {older}, after it {newer}: pass since to the provider's filter")


def _sample(h: Harness, entity: str) -> dict[str, Any]:
    sample = h.target.samples.get(entity)
    if sample is None:
        fail(f"the schema of {entity!r} allows writes: give the suite a record to create, "
             f"ConformanceTarget(samples={{{entity!r}: {{...}}}})")
    return dict(sample)


def _update_for(h: Harness, entity: str, sample: dict[str, Any]) -> dict[str, Any]:
    if entity in h.target.updates:
        return dict(h.target.updates[entity])
    schema = h.schema(entity)
    for name, value in sample.items():
        declared = schema.field(name)
        if isinstance(value, str) and declared is not None and not declared.readonly and name != schema.id_field:
            return {name: value + " (updated)"}
    fail(f"no text field of the {entity!r} sample to change: give ConformanceTarget(updates={{{entity!r}: {{...}}}})")
    return {}


def _scalar(value: Any) -> bool:
    """Values a provider echoes as sent; objects and lists come back enriched
    (ids, defaults), so round trips compare scalars only."""
    return value is None or isinstance(value, (str, int, float, bool))


def _echoed(schema: EntitySchema, data: dict[str, Any]) -> list[tuple[str, Any]]:
    """The values of ``data`` a provider echoes as sent, by dotted path: its
    declared scalars, top-level and inside objects whose sub-fields the
    schema declares (HubSpot's ``properties.email``). Arrays come back
    enriched or reordered, so they are left out."""
    echoed: list[tuple[str, Any]] = []

    def walk(declared_in: Any, value: dict[str, Any], prefix: str) -> None:
        for key, item in value.items():
            declared = declared_in(key)
            if declared is None:
                continue
            if _scalar(item):
                echoed.append((prefix + key, item))
            elif isinstance(item, dict) and declared.type == "object" and declared.fields:
                walk(declared.field, item, f"{prefix}{key}.")

    # (An entity that declares no fields: its top-level scalars, as they come.)
    walk(schema.field if schema.fields else (lambda key: EntityField(key)), data, "")
    return echoed


_ABSENT = object()


def _same(found: Any, value: Any) -> bool:
    """A value read back as sent (a null the provider leaves out is null)."""
    return found == value or (value is None and found is _ABSENT)


def _at(record: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(record, dict) or part not in record:
            return _ABSENT
        record = record[part]
    return record


def _expect_status(response: httpx.Response, status: int, what: str, fix: str) -> dict[str, Any]:
    if response.status_code != status:
        fail(f"{what} answered {_describe(response)} (expected HTTP {status}): {fix}")
    return response.json() if response.content else {}


def check_writes_round_trip(h: Harness, entity: str) -> None:
    """Create, get, update and delete work as the schema's flags promise."""
    schema = h.schema(entity)
    if not schema.supports_create:
        pytest.skip(f"{entity} does not declare supports_create")
    sample = _sample(h, entity)
    created = _expect_status(
        h.api.post(h.records_url(entity), json={"data": sample}), 201, f"creating {entity!r} {_short(sample)}",
        f"the schema declares supports_create for {entity!r}: fix create_record (or the sample), or set "
        f"supports_create=False")["record"]
    [record_id] = h.ids(entity, [created])
    fetched = _expect_status(h.api.get(h.records_url(entity, record_id)), 200, f"getting the created {entity!r}",
                             "get_record must find a record create_record returned")["record"]
    changed = {path: _at(fetched, path) for path, value in _echoed(schema, sample)
               if _at(fetched, path) is not _ABSENT and _at(fetched, path) != value}
    if changed:
        fail(f"the {entity!r} created from {_short(sample)} reads back with {_short(changed)}: "
             f"create_record must send every field it is given")
    if schema.supports_update:
        update = _update_for(h, entity, sample)
        updated = _expect_status(
            h.api.put(h.records_url(entity, record_id), json={"data": update}), 200,
            f"updating {entity!r} {record_id!r} with {_short(update)}",
            f"the schema declares supports_update for {entity!r}: fix update_record, or set supports_update=False")
        again = h.api.get(h.records_url(entity, record_id)).json().get("record", {})
        for path, value in _echoed(schema, update):
            returned, read = _at(updated["record"], path), _at(again, path)
            if not (_same(returned, value) and _same(read, value)):
                fail(f"after updating {entity!r} {record_id!r} with {path}={value!r}, update_record returned "
                     f"{None if returned is _ABSENT else returned!r} and get_record "
                     f"{None if read is _ABSENT else read!r}: send the change to the provider and return the "
                     f"updated record")
    if schema.supports_delete:
        deleted = _expect_status(h.api.delete(h.records_url(entity, record_id)), 200,
                                 f"deleting {entity!r} {record_id!r}",
                                 f"the schema declares supports_delete for {entity!r}: fix delete_record, or set "
                                 f"supports_delete=False")
        gone = h.api.get(h.records_url(entity, record_id))
        kept = deleted.get("record")
        if kept is not None:  # the provider keeps it (canceled): still there, as delete_record answered it
            read = gone.json().get("record") if gone.status_code == 200 else None
            if read is None or str(read.get(schema.id_field)) != str(record_id):
                fail(f"after deleting {entity!r} {record_id!r}, delete_record answered the record the provider "
                     f"keeps, but getting it answered {_describe(gone)}: return True from delete_record where "
                     f"the provider removes the record")
        elif gone.status_code != 404:
            fail(f"after deleting {entity!r} {record_id!r}, getting it answered {_describe(gone)}, expected 404: "
                 f"delete_record must delete at the provider, and get_record raise NotFound for a record "
                 f"that is gone")


def check_unsupported_writes_refused(h: Harness, entity: str) -> None:
    """Writes the schema does not allow are refused with ``read_only`` and
    change nothing; a write hook called for a read-only entity does not
    quietly succeed."""
    schema = h.schema(entity)
    refused = [flag for flag in WRITE_HOOKS.values() if not getattr(schema, flag)]
    if not refused:
        pytest.skip(f"{entity} allows every write")
    before = {i for page in h.list_pages(entity, 100) for i in h.ids(entity, page)}
    existing = next(iter(sorted(before)), MISSING_ID)
    attempts = {
        "supports_create": lambda: h.api.post(h.records_url(entity), json={"data": {"name": "conformance"}}),
        "supports_update": lambda: h.api.put(h.records_url(entity, existing), json={"data": {"name": "x"}}),
        "supports_delete": lambda: h.api.delete(h.records_url(entity, existing)),
    }
    for flag in refused:
        response = attempts[flag]()
        if response.status_code != 405 or response.json().get("code") != "read_only":
            fail(f"the API answered {_describe(response)} to a write {entity!r} does not allow ({flag} is "
                 f"False); expected 405 read_only")
    after = {i for page in h.list_pages(entity, 100) for i in h.ids(entity, page)}
    if after != before:
        fail(f"refused writes changed the {entity!r} records at the provider ({len(before)} before, {len(after)} after)")
    if schema.supports_create or not h.provider.implements("create_record"):
        return
    data = h.target.samples.get(entity) or {f.name: "conformance" for f in schema.fields if not f.readonly}
    try:
        result = h.call("create_record", ctx=h.ctx(), entity=entity, data=data, idempotency_key=uuid.uuid4().hex)
    except HubError:
        return
    except Exception as exc:
        fail(f"create_record for read-only {entity!r} raised {_exception(exc)}: raise a hub error "
             f"(hub.types.ReadOnly) for entities it cannot create")
    fail(f"the schema declares {entity!r} read-only (supports_create=False) but create_record wrote one "
         f"anyway and returned {_short(result)}: declare supports_create=True for {entity!r} if the "
         f"provider can create it, else make create_record raise hub.types.ReadOnly for it (check `entity`)")


# ---------------------------------------------------------------- checks: errors through the dispatcher


def _expect_raise(h: Harness, expected: type[HubError], what: str, fix: str, hook: str, **kwargs: Any) -> None:
    try:
        result = h.call(hook, **kwargs)
    except expected:
        return
    except HubError as exc:
        fail(f"{what} raised {type(exc).__name__} ({exc.message}), expected {expected.__name__}: {fix}")
    except Exception as exc:
        fail(f"{what} raised {_exception(exc)} instead of a hub error: {fix}. Hooks raise the errors of "
             f"hub.types; ctx.http already raises them for error responses (do not pass "
             f"raise_for_status=False and then index the body, nor call response.raise_for_status())")
    fail(f"{what} returned {_short(result)} instead of raising {expected.__name__}: {fix}")


def check_unknown_record(h: Harness, entity: str) -> None:
    """``get_record`` of an id the provider does not know raises ``NotFound``,
    and the API answers 404."""
    _expect_raise(h, NotFound, f"get_record({entity!r}, {MISSING_ID!r})",
                  "raise hub.types.NotFound for an unknown record (ctx.http maps the provider's 404 to it)",
                  "get_record", ctx=h.ctx(), entity=entity, record_id=MISSING_ID)
    response = h.api.get(h.records_url(entity, MISSING_ID))
    if response.status_code != 404:
        fail(f"GET of an unknown {entity!r} through the API answered {_describe(response)}, expected 404 not_found")


def check_get_matches_list(h: Harness, entity: str) -> None:
    """``get_record`` gives a record in the same shape as ``list_records``: sync
    compares the two before pushing a change (policies ``provider_wins`` and
    ``review``), and a difference there reads as a change at the provider."""
    schema = h.schema(entity)
    if not (schema.supports_update or schema.supports_delete):
        pytest.skip(f"{entity} is never pushed to: get_record is not compared with list_records")
    h.seed(entity, 1)
    page = h.call("list_records", ctx=h.ctx(), entity=entity, cursor=None, page_size=1, filters={}, since=None)
    if not isinstance(page, Page):
        fail(f"list_records returned {type(page).__name__}, expected hub.types.Page")
    if not page.records:
        pytest.skip(f"no {entity} record to compare")
    listed = page.records[0]
    got = h.call("get_record", ctx=h.ctx(), entity=entity, record_id=h.ids(entity, [listed])[0])
    if not isinstance(got, dict):
        fail(f"get_record returned {type(got).__name__}, expected the record as a dict")
    if record_hash(got) != record_hash(listed):
        differing = sorted(k for k in set(listed) | set(got) if listed.get(k, "<absent>") != got.get(k, "<absent>"))
        fail(f"get_record and list_records give {entity!r} record {h.ids(entity, [listed])[0]!r} differently "
             f"(fields {differing[:5]}): return the same representation from both (expand or drop the same "
             f"fields), or sync takes every push of it for a conflict")


#: Text a record id may carry that a URL would read as something else than the id.
URL_SYNTAX_SUFFIXES = ("#x", "?x=1", "/x", "%2Fx")


def check_ids_are_one_path_segment(h: Harness, entity: str) -> None:
    """``get_record`` of a known id followed by URL syntax (``#``, ``?``,
    ``/``) finds no record: an id that reached the provider unquoted would
    name the known record (a ``DELETE`` of ``<id>#x`` deleting ``<id>``)."""
    h.seed(entity, 1)
    page = h.call("list_records", ctx=h.ctx(), entity=entity, cursor=None, page_size=1, filters={}, since=None)
    if not isinstance(page, Page) or not page.records:
        pytest.skip(f"no {entity} record to take an id from")
    known = h.ids(entity, page.records[:1])[0]
    for suffix in URL_SYNTAX_SUFFIXES:
        odd = f"{known}{suffix}"
        try:
            result = h.call("get_record", ctx=h.ctx(), entity=entity, record_id=odd)
        except (NotFound, ValidationFailed):
            continue
        except HubError as exc:
            fail(f"get_record({entity!r}, {odd!r}) raised {type(exc).__name__} ({exc.message}), expected NotFound")
        except Exception as exc:
            fail(f"get_record({entity!r}, {odd!r}) raised {_exception(exc)} instead of NotFound")
        fail(f"get_record({entity!r}, {odd!r}) returned {_short(result)}: the id reached the provider's URL "
             f"unquoted, so its {suffix[0]!r} was read as URL syntax and named record {known!r}; put ids in "
             f"paths quoted (urllib.parse.quote(record_id, safe='')), or refuse ids that are not the provider's")


def check_rate_limit_waited(h: Harness) -> None:
    """A 429 with ``Retry-After`` is waited out and the call sent again: a
    list through the API answers the records, not an error nor an empty page."""
    entity = next((name for name in sorted(h.provider.schemas) if h.seed(name, 1)), None)
    if entity is None:
        pytest.skip("the target seeds no records to list")
    h.scripted.script("", (429, {"message": "Too Many Requests"}, {"Retry-After": "1"}))
    started = time.monotonic()
    response = h.api.get(h.records_url(entity), params={"limit": 1})
    waited = time.monotonic() - started
    if not h.scripted.answered:
        h.scripted.queued.clear()
        pytest.skip(f"listing {entity!r} sent no request to the provider")
    if response.status_code != 200:
        fail(f"a list of {entity!r} whose first request met a 429 with Retry-After: 1 answered "
             f"{_describe(response)}, expected 200 after the wait: reach the provider through ctx.http (it "
             f"waits and sends again), and let its errors reach the core")
    if not response.json().get("records"):
        fail(f"a list of {entity!r} whose first request met a 429 with Retry-After: 1 answered no records, "
             f"though the fake holds some: let ctx.http's errors reach the core (an error caught and taken "
             f"for the end of the list loses the rest of it)")
    if waited < 0.9:
        fail(f"a 429 with Retry-After: 1 was sent again after {waited:.2f} s: wait what the provider asks")


def check_unknown_entity(h: Harness) -> None:
    """``list_records`` of an entity the provider does not have raises ``NotFound``."""
    _expect_raise(h, NotFound, f"list_records for the unknown entity {UNKNOWN_ENTITY!r}",
                  "raise hub.types.NotFound for an entity the provider does not have",
                  "list_records", ctx=h.ctx(), entity=UNKNOWN_ENTITY, cursor=None, page_size=h.target.page_size,
                  filters={}, since=None)


def bad_credentials(h: Harness) -> dict[str, Any]:
    if h.target.bad_credentials is not None:
        return dict(h.target.bad_credentials)
    return {k: f"invalid-{v}" if isinstance(v, str) else v for k, v in h.secrets().items()}


def check_bad_credentials(h: Harness) -> None:
    """A call with credentials the provider refuses raises ``AuthFailed``."""
    ctx = h.ctx(credentials=bad_credentials(h))
    if h.provider.implements("test_connection"):
        hook, kwargs = "test_connection", {}
    else:
        entity = sorted(h.provider.schemas)[0]
        hook, kwargs = "list_records", {"entity": entity, "cursor": None, "page_size": h.target.page_size,
                                        "filters": {}, "since": None}
    _expect_raise(h, AuthFailed, f"{hook} with refused credentials",
                  "raise hub.types.AuthFailed when the provider refuses the credentials (ctx.http maps 401 "
                  "to it; map the provider's own auth error in describe_error)", hook, ctx=ctx, **kwargs)


def check_account_identity(h: Harness) -> None:
    """``test_connection``'s ``account``, when it names one, is a stable id:
    text, the same on every call, and kept on the connection."""
    if not h.provider.implements("test_connection"):
        return
    first, second = (h.call("test_connection", ctx=h.ctx()) or {} for _ in range(2))
    account = first.get("account")
    if account is None:
        return
    if not isinstance(account, str) or not account:
        fail(f"test_connection's account is {account!r}: name the provider-side account with its id, as text "
             f"(or leave it out when the credentials cannot tell)")
    if second.get("account") != account:
        fail(f"test_connection named the account {account!r}, then {second.get('account')!r}: it must be the "
             f"account's stable id (the hub refuses credentials of another account by it)")
    from hub.services.connections import account_of

    tested = h.api.post(f"/connections/{h.connection['id']}/test")
    shown = tested.json().get("connection", {}).get("provider_account") if tested.status_code == 200 else None
    if shown != account_of(first):  # (kept cut to the column's length)
        fail(f"after POST /connections/{{id}}/test the connection's provider_account is {shown!r} "
             f"({_describe(tested)}), expected {account!r}")


def check_auth_flow(h: Harness) -> None:
    """The auth flow of the provider's type hands out well-formed URLs and tokens."""
    auth = h.provider.info.auth_type
    name = h.target.provider
    if auth == "api_key":
        response = h.other_organization().post("/connections", json={"provider": name, "credentials": bad_credentials(h),
                                                     "config": h.target.config})
        if h.provider.implements("test_connection") and response.status_code != 424:
            fail(f"creating a connection with refused credentials answered {_describe(response)}, expected "
                 f"424 provider_auth_failed: test_connection must raise AuthFailed for them")
        if response.status_code == 201:
            fail("a connection with refused credentials was saved: implement test_connection so the hub "
                 "checks credentials before saving them")
    elif auth == "oauth2":
        state, redirect = "conformance-state-7f3a", "https://hub.invalid/api/v1/integrations/oauth/cb"
        challenge = "conformance-challenge" if h.provider.info.supports_pkce else None
        url = h.call("authorization_url", ctx=h.direct.app_context(h.provider, h.target.authorize_params),
                     redirect_uri=redirect, state=state, code_challenge=challenge,
                     params=dict(h.target.authorize_params))
        parts = urlsplit(str(url))
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        problems = []
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append("it is not an absolute http(s) URL")
        if query.get("state") != state:
            problems.append("it does not carry the state unchanged as ?state=")
        if query.get("redirect_uri") != redirect:
            problems.append("it does not carry redirect_uri unchanged")
        if challenge and query.get("code_challenge") != challenge:
            problems.append("supports_pkce is set but the code_challenge is not in it")
        if problems:
            fail(f"authorization_url returned {url!r}: " + "; ".join(problems))
    elif auth == "link":
        response = h.api.post(f"/link/{name}/token", json={"user_id": "conformance-user"})
        body = _expect_status(response, 200, f"POST /link/{name}/token",
                              "create_link_token must return {'link_token': ..., 'expiration': ...}")
        if not isinstance(body.get("link_token"), str) or not body["link_token"].strip():
            fail(f"create_link_token returned link_token={body.get('link_token')!r}: return the provider's token")
    else:
        pytest.skip(f"auth type {auth!r} has no flow to check")


def check_token_refresh(h: Harness) -> None:
    """A call meeting an access token the provider no longer accepts is
    refreshed (``refresh_credentials``) and succeeds; the new tokens are
    stored, so the next call needs no refresh; the connection stays ``connected``."""
    if not h.provider.implements("refresh_credentials"):
        pytest.skip("the plugin does not implement refresh_credentials")
    if h.target.expire_tokens is None:
        fail("the plugin refreshes tokens: give ConformanceTarget(expire_tokens=...) a function making the fake "
             "refuse the access tokens it issued (as when they expire), so the suite can check refresh_credentials")
    entity = next((s.name for s in h.provider.schemas.values() if not s.name.startswith("_")), None)
    if entity is None:
        pytest.skip("no entity to list")
    connection_id = h.connection["id"]

    def version() -> int:
        with h.hub.session() as session:
            return session.get(Connection, connection_id).credentials_version

    before = version()
    h.target.expire_tokens(h.fake_app)
    listed = h.api.get(h.records_url(entity), params={"limit": 1})
    _expect_status(listed, 200, f"listing {entity!r} after the fake stopped accepting the access token",
                   "on a 401 the core calls refresh_credentials once and sends the call again: it must post the "
                   "refresh grant and return Credentials with the new access token (and the refresh token, rotated "
                   "or the one it used)")
    if version() <= before:
        fail("the call succeeded after the access token expired, but no refreshed credentials were stored: "
             "refresh_credentials must return the provider's new tokens in Credentials.secrets")
    h.target.expire_tokens(h.fake_app)
    again = h.api.get(h.records_url(entity), params={"limit": 1})
    _expect_status(again, 200, f"listing {entity!r} after a second expiry",
                   "the refresh token refresh_credentials returned must work for the next refresh (a provider "
                   "rotating it answers a new one; keep the old one when it does not)")
    status = h.api.get(f"/connections/{connection_id}").json()["connection"]["status"]
    if status != "connected":
        fail(f"after refreshing, the connection is {status!r}, expected 'connected'")


# ---------------------------------------------------------------- checks: webhooks


def _delivery(h: Harness, kind: str, routed: bool = True) -> tuple[dict[str, str], bytes]:
    # The URL the delivery goes to, for a maker whose provider signs it (HubSpot's v3).
    h.delivery_url = h.hub.webhook_url(h.target.provider, h.connection["id"] if routed else None)
    if not h.provider.implements("verify_webhook"):
        pytest.skip("the plugin does not implement verify_webhook")
    if h.target.webhook is None:
        fail("the plugin verifies webhooks: give ConformanceTarget(webhook=...) a function returning "
             "(headers, body) of a delivery signed for the connection")
    delivery = h.target.webhook(h, kind)
    if delivery is None:
        pytest.skip(f"the target makes no {kind} delivery")
    headers, body = delivery
    return dict(headers), body if isinstance(body, bytes) else str(body).encode()


def _post_webhook(h: Harness, headers: dict[str, str], body: bytes, routed: bool = True) -> httpx.Response:
    name = h.target.provider
    params = {"connection_id": h.connection["id"]} if routed else {}
    return h.api.post(f"/webhooks/{name}", params=params, content=body, headers=headers)


def _stored_events(h: Harness) -> int:
    listed = h.api.get(f"/connections/{h.connection['id']}/webhooks/events", params={"limit": 200})
    return len(listed.json()["events"])


def _delivered(h: Harness, headers: dict[str, str], body: bytes, what: str, fix: str) -> dict[str, Any]:
    """A delivery's outcome, as the hub's JSON summary tells it (``received``,
    ``duplicate``), or for a provider answered with no body
    (``empty_webhook_answers``) as the connection's stored events do."""
    if not h.provider.info.empty_webhook_answers:
        return _expect_status(_post_webhook(h, headers, body), 200, what, fix)
    before = _stored_events(h)
    response = _post_webhook(h, headers, body)
    if response.status_code != 200:
        fail(f"{what} answered {_describe(response)} (expected HTTP 200): {fix}")
    if response.content:
        fail(f"{what} answered with a body ({_short(response.text)}), though the provider declares "
             f"empty_webhook_answers")
    received = _stored_events(h) - before
    return {"received": received, "duplicate": received == 0}


def check_webhook_accepted(h: Harness) -> None:
    """A correctly signed delivery is accepted and yields events."""
    headers, body = _delivery(h, "valid")
    body_json = _delivered(h, headers, body, "a correctly signed delivery",
                           "verify_webhook must accept what the provider signs with the connection's secret")
    if body_json["received"] < 1:
        fail("verify_webhook returned no events for a correctly signed delivery of a change: return its "
             "WebhookEvent list")
    if h.provider.implements("webhook_connection_key"):
        headers, body = _delivery(h, "valid", routed=False)
        _expect_status(_post_webhook(h, headers, body, routed=False), 200,
                       "a signed delivery without ?connection_id=",
                       "webhook_connection_key must return the key the connection is found by: its "
                       "Credentials.webhook_key (set by complete_oauth / exchange_link_token), or for a "
                       "connection made from a typed key, the account its test_connection named")


def check_webhook_forged(h: Harness) -> None:
    """A delivery whose body changed after signing is rejected."""
    headers, body = _delivery(h, "valid")
    forged = body[:-1] + b" " + body[-1:] if body else b"{}"
    response = _post_webhook(h, headers, forged)
    if response.status_code != 401:
        fail(f"a forged delivery (body changed after signing) answered {_describe(response)}, expected 401 "
             f"webhook_rejected: verify the signature over the raw request.body with hmac.compare_digest "
             f"and raise WebhookRejected when it does not match")
    unsigned = _post_webhook(h, {k: v for k, v in headers.items() if k.lower() == "content-type"}, body)
    if unsigned.status_code != 401:
        fail(f"a delivery without its signature headers answered {_describe(unsigned)}, expected 401: "
             f"raise WebhookRejected when the signature is missing")
    if h.provider.implements("webhook_connection_key"):
        # As the provider posts it, without ?connection_id=: routed by the account it names
        # (and, for an account no connection has, by verify_app_webhook).
        headers, body = _delivery(h, "valid", routed=False)
        forged = body[:-1] + b" " + body[-1:] if body else b"{}"
        for what, sent in (("forged (body changed after signing)", (headers, forged)),
                           ("unsigned", ({k: v for k, v in headers.items() if k.lower() == "content-type"}, body))):
            response = _post_webhook(h, *sent, routed=False)
            if response.status_code != 401:
                fail(f"a {what} delivery posted without ?connection_id= answered {_describe(response)}, expected "
                     f"401 webhook_rejected: verify_webhook (and verify_app_webhook, for an account no "
                     f"connection has) must check the signature of deliveries routed by webhook_connection_key")


def check_webhook_stale(h: Harness) -> None:
    """A delivery signed longer ago than the tolerance is rejected."""
    headers, body = _delivery(h, "stale")
    response = _post_webhook(h, headers, body)
    if response.status_code != 401:
        fail(f"a stale delivery (signed long ago) answered {_describe(response)}, expected 401: compare the "
             f"signed timestamp with ctx.provider.webhook_tolerance_seconds and raise WebhookRejected")


def check_webhook_stale_forged(h: Harness) -> None:
    """A stale delivery whose signature does not match is answered like any
    other forgery (``webhook_rejected``), never ``webhook_stale``: the intake
    passes ``webhook_stale`` through as it is, and it would tell the sender of
    a forged delivery that the connection exists."""
    headers, body = _delivery(h, "stale")
    forged = body[:-1] + b" " + body[-1:] if body else b"{}"
    response = _post_webhook(h, headers, forged)
    code = _code(response)
    if response.status_code == 401 and code == "webhook_rejected":
        return
    if code == "webhook_stale":
        fail(f"a stale delivery whose body changed after signing answered {_describe(response)}, expected 401 "
             f"webhook_rejected: verify_webhook judged its age before its signature; verify the signature "
             f"first and raise WebhookRejected(code='webhook_stale') only for a correctly signed delivery "
             f"(a stale answer to a forged delivery tells its sender the connection exists)")
    fail(f"a stale delivery whose body changed after signing answered {_describe(response)}, expected 401 "
         f"webhook_rejected: verify the signature over the raw request.body before anything else and raise "
         f"WebhookRejected when it does not match")


def _code(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def check_webhook_replay(h: Harness) -> None:
    """The same delivery twice is recognised as a duplicate."""
    headers, body = _delivery(h, "valid")
    first = _delivered(h, headers, body, "a correctly signed delivery", "verify_webhook must accept what the "
                       "provider signs")
    again = _delivered(h, headers, body, "the same delivery replayed",
                       "a replay within the tolerance verifies; the hub recognises it by dedup_key")
    if first["received"] < 1 or not again["duplicate"] or again["received"]:
        fail(f"a replayed delivery was stored again (first {first}, replay {again}): give each event a "
             f"dedup_key that is the same on every delivery of it (the provider's event id)")


def check_webhook_events(h: Harness) -> None:
    """Events name declared entities and use the hub's actions."""
    headers, body = _delivery(h, "valid")
    request = WebhookRequest(headers=headers, body=body, query={"connection_id": h.connection["id"]},
                             method="POST", url=h.delivery_url)
    events = h.call("verify_webhook", ctx=h.ctx(), request=request)
    if not isinstance(events, list) or not all(isinstance(e, WebhookEvent) for e in events):
        fail(f"verify_webhook returned {_short(events)}: return a list of hub.types.WebhookEvent")
    for event in events:
        if not event.dedup_key or not event.type:
            fail(f"event {_short(event)} lacks a dedup_key or a type")
        if event.entity is not None and event.entity not in h.provider.schemas:
            fail(f"verify_webhook returned an event for entity {event.entity!r}, which has no schema "
                 f"(entities: {sorted(h.provider.schemas)}): use the entity names of entity_schemas, or "
                 f"declare {event.entity!r}")
        if event.action not in EVENT_ACTIONS:
            fail(f"event action {event.action!r} is not one of {sorted(EVENT_ACTIONS)}")


# ---------------------------------------------------------------- checks: the core's HTTP client


class OwnClientError(RuntimeError):
    """Raised inside a plugin that builds an HTTP client of its own."""


@contextlib.contextmanager
def forbid_own_http_clients() -> Iterator[list[str]]:
    """Make ``httpx.Client``/``httpx.AsyncClient`` construction fail (and be
    recorded) unless it happens in :meth:`hub.http.ClientPool.client`."""
    from hub.http import ClientPool

    allowed = {ClientPool.client.__code__}
    violations: list[str] = []
    originals = {cls: cls.__init__ for cls in (httpx.Client, httpx.AsyncClient)}

    def guarded(cls: type, original: Callable[..., None]) -> Callable[..., None]:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            frame = sys._getframe(1)
            where = None
            while frame is not None:
                if frame.f_code in allowed:
                    return original(self, *args, **kwargs)
                filename = frame.f_code.co_filename
                if where is None and f"{os.sep}httpx{os.sep}" not in filename:
                    where = f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
                frame = frame.f_back
            violations.append(f"httpx.{cls.__name__} built at {where}")
            raise OwnClientError(f"plugins must use ctx.http, not their own httpx.{cls.__name__}")
        return __init__

    for cls, original in originals.items():
        cls.__init__ = guarded(cls, original)  # type: ignore[method-assign]
    try:
        yield violations
    finally:
        for cls, original in originals.items():
            cls.__init__ = original  # type: ignore[method-assign]


def check_uses_core_http_client(h: Harness) -> None:
    """The plugin reaches the provider through ``ctx.http`` only."""
    from hub.runtime import Hub

    plugin = h.provider.plugin
    package = getattr(plugin, "__name__", "").split(".")[0]
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] != package or module is None:
            continue
        for attr, value in vars(module).items():
            if isinstance(value, (httpx.Client, httpx.AsyncClient)):
                fail(f"{module_name}.{attr} is an httpx.{type(value).__name__} of the plugin's own: use ctx.http, "
                     f"the connection's pooled client (auth, rate limits, retries and error mapping included)")
    fresh = Hub(h.settings, h.registry, transport=_ReadOnlyTransport())
    calls = _battery(h)
    ran = []
    try:
        with forbid_own_http_clients() as violations:
            for hook, kwargs in calls:
                before = len(violations)
                try:
                    h.run(h.provider.call(hook, ctx=_fresh_ctx(h, fresh), **kwargs))
                except Exception:  # other checks judge results; this one only watches clients
                    pass
                ran.append(hook)
                if len(violations) > before:
                    fail(f"{hook} built its own client ({violations[before]}): use ctx.http, the connection's "
                         f"pooled client; it already applies auth, rate limits, retries and error mapping, "
                         f"and one client per connection is shared by every call")
    finally:
        h.run(fresh.close())
    if not ran:
        pytest.skip("no hook to call")


class _ReadOnlyTransport(httpx.AsyncBaseTransport):
    """Reads go to the fake; writes get a canned success without reaching it,
    so the client check leaves the fake's data as the other checks expect."""

    def __init__(self) -> None:
        self._network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return await self._network.handle_async_request(request)
        return httpx.Response(200, json={"id": "conformance-battery", "deleted": True}, request=request)

    async def aclose(self) -> None:
        await self._network.aclose()


def _fresh_ctx(h: Harness, hub: Any) -> Any:
    from hub.models import Connection

    with hub.session() as session:
        row = session.get(Connection, h.connection["id"])
    return hub.context(h.provider, row)


def _battery(h: Harness) -> list[tuple[str, dict[str, Any]]]:
    p = h.provider
    calls: list[tuple[str, dict[str, Any]]] = []
    if p.implements("test_connection"):
        calls.append(("test_connection", {}))
    for entity, schema in sorted(p.schemas.items()):
        calls.append(("list_records", {"entity": entity, "cursor": None, "page_size": h.target.page_size,
                                       "filters": {}, "since": None}))
        calls.append(("get_record", {"entity": entity, "record_id": MISSING_ID}))
        if schema.supports_create and entity in h.target.samples:
            calls.append(("create_record", {"entity": entity, "data": dict(h.target.samples[entity]),
                                            "idempotency_key": uuid.uuid4().hex}))
        if schema.supports_update:
            calls.append(("update_record", {"entity": entity, "record_id": MISSING_ID, "data": {}, "base": None}))
        if schema.supports_delete:
            calls.append(("delete_record", {"entity": entity, "record_id": MISSING_ID, "base": None}))
    return [(hook, kwargs) for hook, kwargs in calls if p.implements(hook)]


# ---------------------------------------------------------------- the pytest class


class ConformanceSuite:
    """Subclass as ``Test<Provider>Conformance`` with a ``target`` to run every
    check as a pytest test (entity checks once per entity). The fixtures come
    from the ``hub`` pytest plugin (:mod:`hub.testing.pytest_plugin`)."""

    target: ClassVar[ConformanceTarget]

    def pytest_generate_tests(self, metafunc: Any) -> None:
        if "entity" in metafunc.fixturenames:
            target = getattr(metafunc.cls, "target", None)
            names = entity_names(target) if isinstance(target, ConformanceTarget) else []
            metafunc.parametrize("entity", names, ids=names)

    # declarations
    def test_plugin_loads(self, hub_conformance: ConformanceTarget) -> None:
        check_plugin_loads(hub_conformance)

    def test_provider_info(self, hub_conformance: ConformanceTarget) -> None:
        check_provider_info(hub_conformance)

    def test_entity_schema(self, hub_conformance: ConformanceTarget, entity: str) -> None:
        check_entity_schema(hub_conformance, entity)

    def test_write_hooks_match_schema_flags(self, hub_conformance: ConformanceTarget) -> None:
        check_write_hooks_match_flags(hub_conformance)

    # the API against the fake
    def test_api_lists_provider(self, conformance: Harness) -> None:
        check_api_lists_provider(conformance)

    def test_list_pagination(self, conformance: Harness, entity: str) -> None:
        check_pagination(conformance, entity)

    def test_list_since(self, conformance: Harness, entity: str) -> None:
        check_since(conformance, entity)

    def test_writes_round_trip(self, conformance: Harness, entity: str) -> None:
        check_writes_round_trip(conformance, entity)

    def test_unsupported_writes_refused(self, conformance: Harness, entity: str) -> None:
        check_unsupported_writes_refused(conformance, entity)

    def test_get_matches_list(self, conformance: Harness, entity: str) -> None:
        check_get_matches_list(conformance, entity)

    def test_sub_fields_declared(self, conformance: Harness, entity: str) -> None:
        check_sub_fields_declared(conformance, entity)

    # errors
    def test_unknown_record_not_found(self, conformance: Harness, entity: str) -> None:
        check_unknown_record(conformance, entity)

    def test_ids_are_one_path_segment(self, conformance: Harness, entity: str) -> None:
        check_ids_are_one_path_segment(conformance, entity)

    def test_unknown_entity_not_found(self, conformance: Harness) -> None:
        check_unknown_entity(conformance)

    def test_bad_credentials_auth_failed(self, conformance: Harness) -> None:
        check_bad_credentials(conformance)

    def test_account_identity(self, conformance: Harness) -> None:
        check_account_identity(conformance)

    # auth and webhooks
    def test_auth_flow(self, conformance: Harness) -> None:
        check_auth_flow(conformance)

    def test_token_refresh(self, conformance: Harness) -> None:
        check_token_refresh(conformance)

    def test_webhook_signed_accepted(self, conformance: Harness) -> None:
        check_webhook_accepted(conformance)

    def test_webhook_forged_rejected(self, conformance: Harness) -> None:
        check_webhook_forged(conformance)

    def test_webhook_stale_rejected(self, conformance: Harness) -> None:
        check_webhook_stale(conformance)

    def test_webhook_stale_forged_rejected(self, conformance: Harness) -> None:
        check_webhook_stale_forged(conformance)

    def test_webhook_replay_duplicate(self, conformance: Harness) -> None:
        check_webhook_replay(conformance)

    def test_webhook_events_well_formed(self, conformance: Harness) -> None:
        check_webhook_events(conformance)

    # the core owns HTTP
    def test_uses_core_http_client(self, conformance: Harness) -> None:
        check_uses_core_http_client(conformance)

    # last: a plugin that takes the 429 for a long quota leaves the connection's calls refused
    def test_rate_limit_waited(self, conformance: Harness) -> None:
        check_rate_limit_waited(conformance)


__all__ = ["ConformanceError", "ConformanceSuite", "ConformanceTarget", "Harness", "forbid_own_http_clients",
           "load"]
