"""The ``hub`` command: ``serve``, ``plugins``, ``org``, ``sync``, ``worker``, ``webhooks``, ``reencrypt``."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any

import click
from sqlmodel import select

from hub.config import get_settings, unknown_variables


def _hub():
    """The hub of the ``HUB_*`` settings, its database migrated.

    A setting it cannot use, or a database it cannot reach, ends the command
    with a one-line error (a line per setting), not a traceback."""
    from hub.config import SettingsError
    from hub.db import DatabaseUnavailable
    from hub.plugins import DuplicateProviderError
    from hub.runtime import Hub

    try:
        hub = Hub(get_settings())
        hub.migrate()
    except (DuplicateProviderError, DatabaseUnavailable, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
    # (A failed plugin's settings are its own: its load error says what is wrong.)
    for note in unknown_variables([*hub.registry.providers, *(r.name for r in hub.registry.records)]):
        click.echo(f"Warning: {note}; it is ignored", err=True)
    return hub


def _calling_providers(hub: Any) -> Any:
    """``hub``, for a command that calls providers (serve, worker, sync,
    webhooks retry): a loaded provider's setting it cannot use ends it with a
    line per setting. Only there: a bad provider setting must not stop
    revoking a key or resealing secrets."""
    if problems := hub.provider_settings_problems():
        raise click.ClickException("\n".join(problems))
    return hub


@click.group()
@click.version_option(package_name="hub-core", prog_name="hub")
def main() -> None:
    """hub: a plugin-based integration hub."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Run the hub (embedded SQLite in HUB_DATA_DIR unless HUB_DATABASE_URL is set)."""
    import uvicorn

    from hub.api.main import create_app
    from hub.config import SettingsError
    from hub.models import Organization
    from hub.services.orgs import create_organization
    from hub.sync.worker import executor_kind
    from hub.types import HubError

    hub = _calling_providers(_hub())
    _check_port_free(host, port)
    if "public_url" not in hub.settings.model_fields_set:
        # Webhook and OAuth callback URLs name where this hub listens, not the default port.
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        hub.settings.public_url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"
    try:
        if hub.settings.sync_executor:  # (queue without PostgreSQL or procrastinate: refused now, not in startup)
            executor_kind(hub)
        app = create_app(hub.settings, hub=hub)
    except (HubError, SettingsError) as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from None
    with hub.session() as session:
        if session.exec(select(Organization)).first() is None:
            _org, key = create_organization(session, "demo")
            click.echo(f"Created organization 'demo'. Its API key (shown once): {key}")
    click.echo(f"hub serving at http://{host}:{port}/api/v1/integrations  (docs: http://{host}:{port}/docs)")
    click.echo(f"database: {hub.engine.url.render_as_string(hide_password=True)}")
    loaded = ", ".join(sorted(hub.registry.providers)) or "none"
    click.echo(f"providers: {loaded}")
    logging.getLogger("uvicorn.access").addFilter(RedactQuery())
    uvicorn.run(app, host=host, port=port, log_level="info")


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port in use before starting (uvicorn would start the whole hub, banner
    and all, then stop with a traceback-like error line)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another hub "
                                       f"running? choose another with --port)") from None


class RedactQuery(logging.Filter):
    """Drop query strings from access logs: OAuth callbacks carry codes there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            args = list(record.args)
            args[2] = args[2].split("?", 1)[0]
            record.args = tuple(args)
        return True


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def plugins(as_json: bool) -> None:
    """List installed provider plugins, their versions, entities and load errors."""
    from hub.plugins import PluginRegistry

    registry = PluginRegistry.from_environment(strict=False)
    rows = [r.public() for r in registry.records]
    # (For scripts: 1 when a plugin failed to load, or HUB_PLUGINS names one that is not installed.)
    failed = any(not row["loaded"] for row in rows)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        sys.exit(1 if failed else 0)
    if not rows:
        if os.environ.get("HUB_PLUGINS") is not None:
            click.echo(f"no provider plugins loaded: HUB_PLUGINS={os.environ['HUB_PLUGINS']!r} names none "
                       "that is installed (unset it to load every installed one)")
        else:
            click.echo("no provider plugins installed (entry point group hub.providers)")
    for row in rows:
        where = f"{row['distribution'] or row['module']} {row['version'] or ''}".strip()
        if row["loaded"]:
            click.echo(f"{row['name']:<12} {where:<28} entities: {', '.join(row['entities'])}")
        else:
            click.echo(f"{row['name']:<12} {where:<28} FAILED: {row['error']}")
    sys.exit(1 if failed else 0)


@main.group()
def org() -> None:
    """Manage organizations (tenants)."""


@org.command("create")
@click.argument("name")
@click.option("--allow-duplicate", is_flag=True, help="make it even when an organization has this name already")
def org_create(name: str, allow_duplicate: bool) -> None:
    """Create an organization and print its API key (once)."""
    from hub.models import Organization
    from hub.services.orgs import create_organization
    from hub.types import HubError

    hub = _hub()
    with hub.session() as session:
        same = session.exec(select(Organization.id).where(Organization.name == name.strip())).first()
        if same and not allow_duplicate:
            # (Run twice by a script, it made a second tenant `hub org list` could not tell apart.)
            raise click.ClickException(f"an organization named {name.strip()!r} exists already ({same}): give it a "
                                       f"key with `hub org new-key {same}`, or pass --allow-duplicate")
        try:
            organization, key = create_organization(session, name)
        except HubError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"organization: {organization.id}")
    click.echo(f"api key (store it now, it is not shown again): {key}")


@org.command("list")
def org_list() -> None:
    """List the organizations, with their API keys in use."""
    from hub.models import ApiKey, Organization

    hub = _hub()
    with hub.session() as session:
        organizations = session.exec(select(Organization).order_by(Organization.created_at)).all()
        keys = session.exec(select(ApiKey).where(ApiKey.revoked_at.is_(None))).all()
    if not organizations:
        click.echo("no organizations (hub org create NAME makes one)")
    for organization in organizations:
        active = sum(1 for k in keys if k.organization_id == organization.id)
        click.echo(f"{organization.id}  {organization.name}  (created {organization.created_at:%Y-%m-%d}, "
                   f"{active} API key{'s' if active != 1 else ''} in use)")


@org.command("keys")
@click.argument("organization_id")
def org_keys(organization_id: str) -> None:
    """List ORGANIZATION_ID's API keys (their first characters, never the keys)."""
    from hub.models import ApiKey

    hub = _hub()
    _organization(hub, organization_id)
    with hub.session() as session:
        keys = session.exec(select(ApiKey).where(ApiKey.organization_id == organization_id)
                            .order_by(ApiKey.created_at)).all()
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "in use"
        click.echo(f"{key.id}  {key.prefix}…  created {key.created_at:%Y-%m-%d %H:%M}  {state}")


@org.command("new-key")
@click.argument("organization_id")
def org_new_key(organization_id: str) -> None:
    """Make another API key for ORGANIZATION_ID (to rotate: make one, move the app to it, revoke the old one)."""
    from hub.services.orgs import create_api_key

    hub = _hub()
    _organization(hub, organization_id)
    with hub.session() as session:
        key = create_api_key(session, organization_id)
        session.commit()
    click.echo(f"api key (store it now, it is not shown again): {key}")


@org.command("revoke-key")
@click.argument("key_id")
def org_revoke_key(key_id: str) -> None:
    """Revoke the API key KEY_ID (from `hub org keys`): refused from now on."""
    from hub.models import ApiKey, utcnow

    hub = _hub()
    with hub.session() as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise click.ClickException(f"no API key {key_id} (hub org keys ORGANIZATION_ID lists them)")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            session.add(key)
            session.commit()
    click.echo(f"revoked {key_id} ({key.prefix}…)")


def _organization(hub: Any, organization_id: str) -> None:
    from hub.models import Organization

    with hub.session() as session:
        if session.get(Organization, organization_id) is None:
            raise click.ClickException(f"no organization {organization_id} (hub org list shows them)")


def _interactive() -> bool:
    return sys.stdin.isatty()


@main.command("new-plugin")
@click.argument("name")
@click.option("--label", help="the provider's display name  [default: NAME in title case]")
@click.option("--category", help="one lower-case word: crm, commerce, payments, banking, ...  "
                                 "[default: productivity]")
@click.option("--auth-type", type=click.Choice(["api_key", "oauth2"]),
              help="how connections authenticate  [default: api_key]")
@click.option("--description", default=None, help="one sentence about the provider")
@click.option("--output-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="where to create hub-NAME/")
def new_plugin(name: str, label: str | None, category: str | None, auth_type: str | None,
               description: str | None, output_dir: str) -> None:
    """Create hub-NAME/, a provider plugin package that works against its own
    fake server, from the plugin template (see PLUGINS.md).

    Options not given are asked for at a terminal, and take their defaults
    otherwise (a script, CI)."""
    from hub.scaffold import ScaffoldError, ScaffoldWriteError, render

    ask = _interactive()

    def choose(value: str | None, question: str, default: str, **kwargs: object) -> str:
        if value is not None:
            return value
        return click.prompt(question, default=default, **kwargs) if ask else default

    label = choose(label, "Label (display name)", name.replace("_", " ").title())
    category = choose(category, "Category (crm, commerce, payments, banking, ...)", "productivity")
    auth_type = choose(auth_type, "Auth type", "api_key", type=click.Choice(["api_key", "oauth2"]))
    try:
        path = render(name, label=label, category=category, auth_type=auth_type, description=description,
                      output_dir=output_dir)
    except ScaffoldError as exc:
        raise click.UsageError(str(exc)) from None
    except ScaffoldWriteError as exc:  # an output directory that cannot be made or written
        raise click.ClickException(str(exc)) from None
    module = f"hub_{name}"
    click.echo(f"created {path}")
    click.echo("next:")
    click.echo(f"  cd {path} && pip install -e '.[test]'   # into the hub's environment")
    click.echo("  pytest                                  # the conformance suite against the fake")
    click.echo(f"  then adapt every TODO(author) in {module}/__init__.py and {module}/testing.py")


@main.command()
@click.argument("connection_id")
@click.option("--entity", help="Sync one entity (default: every enabled sync config).")
@click.option("--full", is_flag=True, help="Full refresh instead of the changes since the last pass.")
@click.option("--direction", type=click.Choice(["pull", "push", "both"]), help="Only pull or only push.")
@click.option("--page-size", default=100, show_default=True, type=click.IntRange(1, 250))
def sync(connection_id: str, entity: str | None, full: bool, direction: str | None, page_size: int) -> None:
    """Run a sync of CONNECTION_ID here and now, with a progress bar.

    Runs of this connection that were interrupted (their process killed) are
    resumed first, each from its last stored page; then the run asked for,
    unless a resumed one was the same (same entity, or every entity).

    The runs are this process's: a server's scheduler leaves them to it while
    it waits for another run of the connection to end. Exits 1 when a run
    failed, 3 when one was left running (or queued) in another process.
    """
    import asyncio

    from tqdm import tqdm

    from hub.models import Connection
    from hub.sync.engine import TERMINAL, SyncEngine, create_run, interrupted_runs, requeue
    from hub.sync.leases import new_owner
    from hub.types import HubError

    hub = _calling_providers(_hub())
    with hub.session() as session:
        connection = session.get(Connection, connection_id)
    if connection is None:
        raise click.ClickException(f"no connection {connection_id}")
    runs = []
    owner = new_owner()  # claims the runs for this process
    for interrupted in interrupted_runs(hub, connection.id):
        if requeue(hub, interrupted.id, interrupted.owner, "interrupted; resumed by hub sync", claimant=owner):
            click.echo(f"resuming interrupted run {interrupted.id} ({interrupted.entity or 'every entity'}, "
                       f"direction {interrupted.direction}{', full refresh' if interrupted.full_refresh else ''})")
            runs.append(interrupted)
    if not any(r.entity == entity for r in runs):
        try:
            run, _new = create_run(hub, connection, entity=entity, full_refresh=full, direction=direction,
                                   trigger="cli", owner=owner)
        except HubError as exc:  # an unknown entity, a direction no config has
            raise click.ClickException(f"{exc.code}: {exc.message}") from None
        click.echo(f"run {run.id}")
        runs.append(run)
    elif full or direction:
        click.echo("the options given apply to the next run")
    failed, elsewhere = [], []
    for run in runs:
        bar = tqdm(unit=" records", desc=run.entity or "sync", dynamic_ncols=True)
        pages = {"pull": 0, "pushed": 0}

        def progress(kind: str, name: str, count: int, bar=bar, pages=pages) -> None:  # noqa: ANN001
            pages["pull" if kind == "page" else "pushed"] += 1
            # The postfix first: update() draws the bar, which then shows this page too.
            bar.set_postfix(entity=name, pages=pages["pull"], pushed=pages["pushed"], refresh=False)
            bar.update(count if kind == "page" else 0)

        async def execute(run_id: str = run.id, progress=progress):  # noqa: ANN001, ANN202
            try:
                return await SyncEngine(hub, page_size=page_size, progress=progress).execute(run_id, owner=owner)
            finally:
                await hub.close()

        result = asyncio.run(execute())
        bar.close()
        if result is None:
            raise click.ClickException(f"run {run.id} is gone: its connection was deleted while it ran")
        if result.status not in TERMINAL:
            # Taken up by another process (this one was taken for gone): it goes on there.
            where = "is running in another process" if result.status == "running" else "is queued again"
            click.echo(f"run {run.id} {where}: it did not finish here and goes on without this command; "
                       f"follow it in GET /connections/{connection.id}/sync/runs/{run.id}", err=True)
            elsewhere.append(run.id)
            continue
        click.echo(f"{result.status}: fetched {result.fetched}, created {result.created}, updated {result.updated}, "
                   f"deleted {result.deleted}, pushed {result.pushed}, failed {result.failed}, "
                   f"conflicts {result.conflicts}, pages {result.pages}")
        if result.status != "succeeded":
            failed.append(f"{result.error_code}: {result.error}")
    if failed:
        raise click.ClickException("; ".join(failed))
    if elsewhere:
        raise SystemExit(3)


@main.command()
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 100),
              help="Runs executed at once by this worker.")
@click.option("--schedule", is_flag=True,
              help="Also schedule runs and apply webhook events (when the API processes do not).")
def worker(concurrency: int, schedule: bool) -> None:
    """Execute queued sync runs (PostgreSQL). Start several, on several
    machines: they share the queue, and one connection never syncs twice at once."""
    import asyncio

    from hub.services.webhooks import WebhookProcessor
    from hub.sync.scheduler import Scheduler, SyncService
    from hub.sync.worker import QueueExecutor, run_worker
    from hub.types import HubError

    hub = _calling_providers(_hub())
    if hub.engine.dialect.name != "postgresql":
        raise click.ClickException("hub worker needs PostgreSQL (HUB_DATABASE_URL); "
                                   "with SQLite `hub serve` executes the runs itself")
    click.echo(f"hub worker: {concurrency} at a time from {hub.engine.url.render_as_string(hide_password=True)}")

    async def work():
        extras = []
        if schedule:
            service = SyncService(hub, QueueExecutor(hub, workers=0))
            await service.start()
            extras = [service, await WebhookProcessor(hub, submit=service.submit).start(),
                      await Scheduler(service, hub.settings.scheduler_interval_seconds).start()]
        try:
            await run_worker(hub, concurrency=concurrency)
        finally:
            for part in reversed(extras):
                await part.stop()
            await hub.close()

    try:
        asyncio.run(work())
    except HubError as exc:
        raise click.ClickException(exc.message) from None


@main.command()
def reencrypt() -> None:
    """Rewrite the stored secrets with the current HUB_SECRET_KEY.

    To replace the key: set the new one as HUB_SECRET_KEY and the old one as
    HUB_PREVIOUS_SECRET_KEY (for every process), run this, then unset
    HUB_PREVIOUS_SECRET_KEY."""
    from hub.services.secrets import reencrypt as rewrite

    hub = _hub()
    outcome = rewrite(hub)
    click.echo(f"rewritten with the current key: {outcome.rewritten}; already under it: {outcome.current}")
    if outcome.check_adopted:
        click.echo("the database's key check, sealed with a key this process does not have, is now sealed with the "
                   "current key: every hub process on this database must use it")
    if outcome.unreadable:
        for table, key in outcome.unreadable:
            click.echo(f"unreadable with either key: {table} {key}", err=True)
        raise click.ClickException(f"{len(outcome.unreadable)} stored secrets are encrypted with neither key: "
                                   "their connections must be given their credentials again (or connect again)")


@main.group()
def webhooks() -> None:
    """Inspect stored webhook events and retry the failed ones."""


@webhooks.command("list")
@click.option("--connection", "connection_id", help="Only this connection's events.")
@click.option("--status", type=click.Choice(["pending", "failed", "processed", "ignored"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def webhooks_list(connection_id: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List webhook events, newest first, with their attempts and last error."""
    from hub.services.webhooks import list_events

    hub = _hub()
    _known_connection(hub, connection_id)
    events, _next = list_events(hub, connection_id, status=status, limit=limit)
    if as_json:
        click.echo(json.dumps(events, indent=2, default=str))
        return
    if not events:
        click.echo("no webhook events")
    for event in events:
        line = (f"{event['id']}  {event['received_at']:%Y-%m-%d %H:%M:%S}  {event['status']:<9} "
                f"{event['attempts']:>2}  {event['connection_id']}  {event['type']}")
        click.echo(line + (f"  {event['error']}" if event["error"] and event["status"] != "processed" else ""))


def _known_connection(hub: Any, connection_id: str | None) -> None:
    """:raises click.ClickException: ``connection_id`` names no connection."""
    from hub.models import Connection

    if connection_id is not None:
        with hub.session() as session:
            if session.get(Connection, connection_id) is None:
                raise click.ClickException(f"no connection {connection_id}")


@webhooks.command("retry")
@click.argument("event_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Retry every failed event (of --connection).")
@click.option("--connection", "connection_id", help="With --all-failed: only this connection's events.")
def webhooks_retry(event_ids: tuple[str, ...], all_failed: bool, connection_id: str | None) -> None:
    """Put failed webhook events back in the queue, their attempts reset; a
    running `hub serve` (or `hub worker --schedule`) applies them."""
    from hub.services.webhooks import list_events, retry_event
    from hub.types import HubError

    if not event_ids and not all_failed:
        raise click.UsageError("name the events to retry, or use --all-failed")
    hub = _calling_providers(_hub())
    _known_connection(hub, connection_id)  # (one misspelt would retry nothing, and say so as if all were well)
    ids = list(event_ids)
    if all_failed:
        cursor = None
        while True:
            page, cursor = list_events(hub, connection_id, status="failed", cursor=cursor, limit=500)
            ids += [event["id"] for event in page]
            if cursor is None:
                break
    failures = 0
    for event_id in ids:
        try:
            retry_event(hub, None, event_id)
            click.echo(f"{event_id}: queued")
        except HubError as exc:
            failures += 1
            click.echo(f"{event_id}: {exc.code}: {exc.message}", err=True)
    if not ids:
        click.echo("no failed webhook events")
    if failures:
        raise click.ClickException(f"{failures} of {len(ids)} events not retried")


if __name__ == "__main__":
    sys.exit(main())
