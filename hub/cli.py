"""The ``hub`` command: ``serve``, ``plugins``, ``org create``."""

from __future__ import annotations

import json
import logging
import sys

import click
from sqlmodel import select

from hub.config import get_settings


def _hub():
    from hub.runtime import Hub

    hub = Hub(get_settings())
    hub.migrate()
    return hub


@click.group()
def main() -> None:
    """hub: a plugin-based integration hub."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the hub (embedded SQLite in HUB_DATA_DIR unless HUB_DATABASE_URL is set)."""
    import uvicorn

    from hub.api.main import create_app
    from hub.models import Organization
    from hub.services.orgs import create_organization

    hub = _hub()
    with hub.session() as session:
        if session.exec(select(Organization)).first() is None:
            _org, key = create_organization(session, "demo")
            click.echo(f"Created organization 'demo'. Its API key (shown once): {key}")
    click.echo(f"hub serving at http://{host}:{port}/api/v1/integrations  (docs: http://{host}:{port}/docs)")
    click.echo(f"database: {hub.engine.url.render_as_string(hide_password=True)}")
    loaded = ", ".join(sorted(hub.registry.providers)) or "none"
    click.echo(f"providers: {loaded}")
    logging.getLogger("uvicorn.access").addFilter(RedactQuery())
    uvicorn.run(create_app(hub.settings, hub=hub), host=host, port=port, log_level="info")


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

    registry = PluginRegistry.from_environment()
    rows = [r.public() for r in registry.records]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no provider plugins installed (entry point group hub.providers)")
    for row in rows:
        where = f"{row['distribution'] or row['module']} {row['version'] or ''}".strip()
        if row["loaded"]:
            click.echo(f"{row['name']:<12} {where:<28} entities: {', '.join(row['entities'])}")
        else:
            click.echo(f"{row['name']:<12} {where:<28} FAILED: {row['error']}")


@main.group()
def org() -> None:
    """Manage organizations (tenants)."""


@org.command("create")
@click.argument("name")
def org_create(name: str) -> None:
    """Create an organization and print its API key (once)."""
    from hub.services.orgs import create_organization

    hub = _hub()
    with hub.session() as session:
        organization, key = create_organization(session, name)
    click.echo(f"organization: {organization.id}")
    click.echo(f"api key (store it now, it is not shown again): {key}")


if __name__ == "__main__":
    sys.exit(main())
