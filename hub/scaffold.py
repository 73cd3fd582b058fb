"""Start a provider plugin package from the template (``hub new-plugin``).

The template is ``plugin_template/`` (a copier template shipped inside the
core as ``hub/plugin_template``); it renders ``hub-<name>`` with the plugin
module ``hub_<name>``, a fake server and the conformance suite wired up.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "plugin_template"
AUTH_TYPES = ("api_key", "oauth2")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldError(ValueError):
    """The answers cannot render a plugin (bad name, existing directory)."""


class ScaffoldWriteError(OSError):
    """The plugin's directory cannot be created or written (the output directory)."""


#: Names whose package ``hub-<name>`` is already a distribution of the project.
RESERVED_NAMES = {"core": "the hub itself", **{
    name: f"the bundled {label} plugin" for name, label in (
        ("shopify", "Shopify"), ("stripe", "Stripe"), ("plaid", "Plaid"), ("quickbooks", "QuickBooks"),
        ("xero", "Xero"), ("salesforce", "Salesforce"), ("hubspot", "HubSpot"))}}


def package_dir(name: str, output_dir: Path | str = ".") -> Path:
    return Path(output_dir) / f"hub-{name.replace('_', '-')}"


def render(name: str, *, label: str | None = None, category: str = "productivity", auth_type: str = "api_key",
           description: str | None = None, output_dir: Path | str = ".") -> Path:
    """Render the template into ``<output_dir>/hub-<name>``; return that directory.

    :raises ScaffoldError: the name or category is not a lower-case
        identifier, the auth type is not supported, or the directory exists.
    :raises ScaffoldWriteError: the directory cannot be created or written.
    """
    from copier import run_copy
    from copier.errors import CleanupWarning

    if not NAME.match(name):
        raise ScaffoldError(f"plugin name {name!r}: use lower case letters, digits and underscores, "
                            f"starting with a letter (it becomes the provider id and hub_{name})")
    if name in RESERVED_NAMES:
        raise ScaffoldError(f"plugin name {name!r}: hub-{name.replace('_', '-')} is {RESERVED_NAMES[name]}; "
                            f"installing a plugin of that name would replace it")
    if not NAME.match(category):
        raise ScaffoldError(f"category {category!r}: use one lower-case word (crm, commerce, payments)")
    if auth_type not in AUTH_TYPES:
        raise ScaffoldError(f"auth type {auth_type!r}: the template supports {', '.join(AUTH_TYPES)}")
    destination = package_dir(name, output_dir)
    if destination.exists():
        raise ScaffoldError(f"{destination} already exists")
    label = label or name.replace("_", " ").title()
    data = {"name": name, "label": label, "category": category, "auth_type": auth_type,
            "description": description or f"{label} for the hub."}
    try:
        with warnings.catch_warnings():
            # (Its own attempt to remove a directory it could not make: the error below says it all.)
            warnings.filterwarnings("ignore", category=CleanupWarning)
            run_copy(str(TEMPLATE), destination, data=data, defaults=True, quiet=True)
    except OSError as exc:
        raise ScaffoldWriteError(f"cannot create {destination}: {exc.filename or destination}: "
                                 f"{exc.strerror or exc}") from None
    return destination
