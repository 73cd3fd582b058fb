"""Discovery, registration and dispatch of provider plugins.

Plugins are entry points in the group ``hub.providers``, loaded with stevedore
so that a plugin that fails to import is recorded (which, and why) while the
others load, validated by pluggy at ``register()`` and ``check_pending()``, and
called through :class:`Provider`, which reaches exactly one plugin's hook
implementation with ``PluginManager.subset_hook_caller``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import logging
import math
import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from stevedore import ExtensionManager, NamedExtensionManager

from hub import hookspecs
from hub.types import (
    Action,
    AuthType,
    EntitySchema,
    FieldType,
    NotFound,
    NotSupported,
    ProviderInfo,
    RateLimit,
)

log = logging.getLogger("hub.plugins")

#: The core's distribution name, which plugins name in their dependencies with the range they fit.
CORE_DISTRIBUTION = "hub-core"

ENTRY_POINT_GROUP = "hub.providers"
REQUIRED_HOOKS = ("provider_info", "entity_schemas")


class DuplicateProviderError(RuntimeError):
    """Two installed plugins claim the same provider id."""


@dataclass
class PluginRecord:
    """What the hub knows of one installed plugin, loaded or not."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    error: str | None = None
    provider: Provider | None = None

    def public(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "loaded": self.error is None,
            "error": self.error,
        }
        if self.provider is not None:
            data["hooks"] = sorted(self.provider.hooks)
            data["entities"] = sorted(self.provider.schemas)
        return data


class Provider:
    """One loaded provider: its declarations and a dispatcher to its hooks."""

    def __init__(self, pm: pluggy.PluginManager, plugin: object, info: ProviderInfo,
                 schemas: list[EntitySchema], actions: list[Action], hooks: set[str]):
        self._pm = pm
        self.plugin = plugin
        self.info = info
        self.name = info.name
        self.schemas = {s.name: s for s in schemas}
        self.actions = {a.name: a for a in actions}
        self.hooks = hooks
        self._callers: dict[str, Any] = {}

    def implements(self, hook: str) -> bool:
        return hook in self.hooks

    def takes(self, hook: str, argument: str) -> bool:
        """Whether this plugin's ``hook`` names ``argument`` (:func:`_takes`)."""
        return _takes(self._pm, self.plugin, hook, argument)

    def schema(self, entity: str) -> EntitySchema:
        try:
            return self.schemas[entity]
        except KeyError:
            raise NotFound(f"provider {self.name} has no entity {entity!r}", code="unknown_entity") from None

    def action(self, name: str) -> Action:
        try:
            return self.actions[name]
        except KeyError:
            raise NotFound(f"provider {self.name} has no action {name!r}", code="unknown_action") from None

    async def call(self, hook: str, **kwargs: Any) -> Any:
        """Call ``hook`` on this provider only and await the result if needed.

        :raises NotSupported: the plugin does not implement ``hook``.
        """
        if hook not in self.hooks:
            raise NotSupported(f"provider {self.name} does not support {hook.replace('_', ' ')}")
        caller = self._callers.get(hook)
        if caller is None:
            others = [p for p in self._pm.get_plugins() if p is not self.plugin and _is_provider(self._pm, p)]
            caller = self._pm.subset_hook_caller(hook, remove_plugins=others)
            self._callers[hook] = caller
        result = caller(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def public(self) -> dict[str, Any]:
        info = self.info
        return {
            "name": info.name,
            "label": info.label,
            "category": info.category,
            "description": info.description,
            "auth_type": info.auth_type,
            "logo": info.logo,
            "entities": sorted(self.schemas),
            "actions": sorted(self.actions),
            "supports_webhooks": info.supports_webhooks or "verify_webhook" in self.hooks,
            # An OAuth or Link connection's declared config is given when connecting (Shopify's
            # shop, an authorize parameter) or comes with its authorization: PUT refuses to change it.
            "config_fields": [{**f.public(), "fixed_after_connect": f.readonly or info.auth_type != "api_key"}
                              for f in info.config_fields],
            "credential_fields": [f.public() for f in info.credential_fields],
            "rate_limits": [_public_limit(limit) for limit in (
                *([info.rate_limit] if info.rate_limit else []),
                *(dataclasses.replace(limit, endpoint=suffix) for suffix, limit in info.endpoint_rate_limits.items()),
                *info.rate_limits)],
            "max_concurrent_requests": info.max_concurrent_requests or None,
            "lasting_tokens_until": info.lasting_tokens_until,
        }


def _public_limit(limit: RateLimit) -> dict[str, Any]:
    window = limit.window_seconds > 0
    return {"calls": limit.burst if window else None, "per_seconds": limit.window_seconds if window else None,
            "requests_per_second": None if window else limit.requests_per_second,
            "burst": None if window else limit.burst, "scope": limit.scope, "endpoint": limit.endpoint or None,
            "name": limit.name or None}


def _is_provider(pm: pluggy.PluginManager, plugin: object) -> bool:
    return any(impl.plugin is plugin for impl in pm.hook.provider_info.get_hookimpls())


def _sync_call(pm: pluggy.PluginManager, plugin: object, hook: str) -> Any:
    others = [p for p in pm.get_plugins() if p is not plugin]
    return pm.subset_hook_caller(hook, remove_plugins=others)()


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("hub")
    pm.add_hookspecs(hookspecs)
    return pm


class PluginRegistry:
    """The installed provider plugins: loaded ones as :class:`Provider`, failed
    ones as :class:`PluginRecord` with their error."""

    def __init__(self) -> None:
        self.pm = new_plugin_manager()
        self.providers: dict[str, Provider] = {}
        self.records: list[PluginRecord] = []

    # -- loading

    @classmethod
    def discover(cls, names: list[str] | None = None, strict: bool = True) -> PluginRegistry:
        """Load the plugins installed under ``hub.providers``.

        :param names: load only these entry point names (``HUB_PLUGINS``);
            ``None`` loads every installed plugin.
        :param strict: raise on two plugins claiming one provider id; otherwise
            the second is listed with that error (``hub plugins``, for diagnosis).
        :raises DuplicateProviderError: two distributions claim one provider id.
        """
        registry = cls()
        failures: list[tuple[Any, BaseException]] = []

        def on_failure(_manager: Any, entry_point: Any, error: BaseException) -> None:
            failures.append((entry_point, error))

        missing: list[str] = []
        if names is None:
            manager = ExtensionManager(ENTRY_POINT_GROUP, on_load_failure_callback=on_failure)
        else:
            manager = NamedExtensionManager(
                ENTRY_POINT_GROUP, names=names, on_load_failure_callback=on_failure,
                on_missing_entrypoints_callback=missing.extend,
            )
        for name in missing:
            log.warning("HUB_PLUGINS names %r, but no installed plugin provides it", name)
            registry.records.append(PluginRecord(
                name=name, module="", error=f"HUB_PLUGINS names {name!r}, but no installed plugin provides it"))
        for entry_point, error in failures:
            dist, version = _distribution(entry_point)
            # (A plugin made for another core often fails on import: the version is the cause to tell.)
            problem = _core_mismatch(dist, version) or _describe(error)
            log.warning("plugin %s failed to load: %s", entry_point.name, problem)
            registry.records.append(PluginRecord(
                name=entry_point.name, module=entry_point.value, distribution=dist,
                version=version, error=problem))
        for ext in manager.extensions:
            dist, version = _distribution(ext.entry_point)
            if problem := _core_mismatch(dist, version):
                log.warning("plugin %s not loaded: %s", ext.name, problem)
                registry.records.append(PluginRecord(name=ext.name, module=ext.entry_point.value,
                                                     distribution=dist, version=version, error=problem))
                continue
            try:
                registry.register(ext.plugin, ext.name, distribution=dist, version=version,
                                  module_name=ext.entry_point.value)
            except DuplicateProviderError as exc:
                if strict:
                    raise
                registry.records.append(PluginRecord(name=ext.name, module=ext.entry_point.value,
                                                     distribution=dist, version=version, error=str(exc)))
        registry.records.sort(key=lambda r: r.name)
        return registry

    @classmethod
    def from_environment(cls, strict: bool = True) -> PluginRegistry:
        selected = os.environ.get("HUB_PLUGINS")
        names = None if selected is None else [n.strip() for n in selected.split(",") if n.strip()]
        return cls.discover(names, strict=strict)

    def register(self, plugin: object, name: str, *, distribution: str | None = None,
                 version: str | None = None, module_name: str | None = None) -> PluginRecord:
        """Register one plugin object (a module of hook implementations).

        A plugin pluggy rejects, or whose declarations are broken, is recorded
        with its error and left out; the others keep working.

        :raises DuplicateProviderError: the provider id is already taken.
        """
        module_name = module_name or getattr(plugin, "__name__", repr(plugin))
        record = PluginRecord(name=name, module=module_name, distribution=distribution, version=version)
        self.records.append(record)
        registered_before = self.pm.is_registered(plugin)
        try:
            record.provider = self._register(plugin, name)
        except DuplicateProviderError:
            self.records.remove(record)
            raise
        except Exception as exc:
            record.error = _describe(exc)
            log.warning("plugin %s rejected: %s", name, record.error)
            if self.pm.is_registered(plugin) and not registered_before:
                # (Registered under another name already, it is that provider's: left as it is.)
                self.pm.unregister(plugin)
            return record
        self.providers[record.provider.name] = record.provider
        return record

    def _register(self, plugin: object, name: str) -> Provider:
        if name in self.providers:
            other = next(r for r in self.records if r.provider is self.providers[name])
            mine = self.records[-1]
            raise DuplicateProviderError(
                f"provider id {name!r} is claimed by two plugins: "
                f"{other.distribution or other.module} and {mine.distribution or mine.module}; "
                f"uninstall one of them (pip uninstall {other.distribution or other.module}, "
                f"or pip uninstall {mine.distribution or mine.module})"
            )
        self.pm.register(plugin, name=f"hub.providers:{name}")
        hooks = set(_hookimpl_names(plugin))
        unknown = sorted(name for name in hooks if not hasattr(hookspecs, name))
        if unknown:
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook(s) {', '.join(unknown)}: not in hub.hookspecs"
            )
        missing = [h for h in REQUIRED_HOOKS if h not in hooks]
        if missing:
            raise ValueError(f"plugin does not implement required hook(s): {', '.join(missing)}")
        info = _sync_call(self.pm, plugin, "provider_info")
        if not isinstance(info, ProviderInfo):
            raise TypeError(f"provider_info returned {type(info).__name__}, expected ProviderInfo")
        if info.name != name:
            raise ValueError(f"entry point name {name!r} differs from provider_info name {info.name!r}")
        schemas = _sync_call(self.pm, plugin, "entity_schemas")
        if not isinstance(schemas, list) or not all(isinstance(s, EntitySchema) for s in schemas):
            raise TypeError("entity_schemas must return a list of EntitySchema")
        problems = info_problems(info, hooks.__contains__)
        names = [s.name for s in schemas]
        problems += [f"entity {n!r} is declared twice" for n in sorted({n for n in names if names.count(n) > 1})]
        problems += [f"entity {s.name!r}: {problem}" for s in schemas for problem in schema_problems(s)]
        problems += [f"entity {s.name!r} declares filters its list_records does not take (name filters in it)"
                     for s in schemas if s.filters and not _takes(self.pm, plugin, "list_records", "filters")]
        if problems:
            raise ValueError("broken declarations: " + "; ".join(problems))
        actions = _sync_call(self.pm, plugin, "provider_actions") if "provider_actions" in hooks else []
        return Provider(self.pm, plugin, info, schemas, list(actions or []), hooks)

    # -- lookup

    def get(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            raise NotFound(self.missing(name), code="unknown_provider") from None

    def missing(self, name: str) -> str:
        """Why no provider ``name`` is loaded: its plugin failed to load (and
        how), or none is installed (or HUB_PLUGINS leaves it out)."""
        failed = next((r for r in self.records if r.name == name and r.error), None)
        if failed is not None:
            return f"the {name} plugin failed to load: {failed.error} (GET /plugins, hub plugins)"
        return f"no provider named {name!r} is installed (or HUB_PLUGINS leaves it out)"

    def list(self, category: str | None = None) -> list[Provider]:
        return [p for n, p in sorted(self.providers.items()) if category is None or p.info.category == category]


AUTH_TYPES = set(get_args(AuthType))
FIELD_TYPES = set(get_args(FieldType))
#: The hooks each kind of authentication needs.
AUTH_HOOKS = {"oauth2": ("authorization_url", "exchange_code"),
              "link": ("create_link_token", "exchange_public_token")}


def info_problems(info: ProviderInfo, implements: Any) -> list[str]:
    """What makes a ``ProviderInfo`` unusable (the hub refuses the plugin; the
    conformance suite reports the same): an unknown auth type or its missing
    hooks, a URL that is not absolute. ``implements(hook)`` says which hooks exist."""
    problems = []
    if info.auth_type not in AUTH_TYPES:
        problems.append(f"auth_type {info.auth_type!r} is not one of {sorted(AUTH_TYPES)}")
    for hook in AUTH_HOOKS.get(info.auth_type, ()):
        if not implements(hook):
            problems.append(f"auth_type is {info.auth_type!r} but the plugin does not implement {hook}")
    for name, template in info.urls.items():
        if not template.startswith(("http://", "https://", "{")):
            problems.append(f"urls[{name!r}] = {template!r} is not an absolute http(s) URL template")
    declared = [("rate_limit", info.rate_limit), ("app_rate_limit", info.app_rate_limit),
                *((f"endpoint_rate_limits[{k!r}]", v) for k, v in dict(info.endpoint_rate_limits).items()),
                *((f"rate_limits[{n}]", v) for n, v in enumerate(info.rate_limits))]
    for where, limit in declared:
        if limit is not None:
            problems += [f"{where} {problem}" for problem in rate_limit_problems(limit)]
        if isinstance(limit, RateLimit) and not where.startswith("rate_limits[") and (
                limit.scope != "connection" or limit.endpoint or limit.name):
            problems.append(f"{where} sets scope, endpoint or name, which only limits in rate_limits have: "
                            f"declare it there")
    problems += [f"endpoint_rate_limits[{suffix!r}] {problem}" for suffix in dict(info.endpoint_rate_limits)
                 if (problem := _endpoint_problem(suffix))]
    names = [limit.name for limit in info.rate_limits if isinstance(limit, RateLimit) and limit.name]
    if len(names) != len(set(names)):
        problems.append(f"rate_limits name {sorted({n for n in names if names.count(n) > 1})} more than once: "
                        f"a refusal naming one could not say which")
    if isinstance(info.unmetered_urls, str):
        problems.append("unmetered_urls is a string: a tuple of names of urls, as (\"connections\",)")
    else:
        problems += [f"unmetered_urls names {name!r}, which is not one of urls" for name in info.unmetered_urls
                     if name not in info.urls]
    if not isinstance(info.max_concurrent_requests, int) or info.max_concurrent_requests < 0:
        problems.append(f"max_concurrent_requests {info.max_concurrent_requests!r} is not a whole number from 0")
    return problems


def rate_limit_problems(limit: Any) -> list[str]:
    """What makes a declared :class:`RateLimit` unusable (it would divide by
    nothing, or never let a call through)."""
    if not isinstance(limit, RateLimit):
        return [f"is {type(limit).__name__}, not a RateLimit"]
    problems = []
    window = isinstance(limit.window_seconds, (int, float)) and limit.window_seconds > 0
    if not window and not (isinstance(limit.requests_per_second, (int, float))
                           and math.isfinite(limit.requests_per_second) and limit.requests_per_second > 0):
        problems.append(f"requests_per_second {limit.requests_per_second!r} is not a number above 0 (a window: "
                        f"RateLimit.per(calls, seconds), seconds above 0)")
    if not isinstance(limit.burst, int) or limit.burst < 1:
        problems.append(f"burst {limit.burst!r} is not a whole number from 1")
    if not (isinstance(limit.window_seconds, (int, float)) and math.isfinite(limit.window_seconds)
            and limit.window_seconds >= 0):
        problems.append(f"window_seconds {limit.window_seconds!r} is not a number of seconds")
    if limit.scope not in ("connection", "app"):
        problems.append(f"scope {limit.scope!r} is not 'connection' or 'app'")
    if limit.endpoint and (problem := _endpoint_problem(limit.endpoint)):
        problems.append(f"endpoint {limit.endpoint!r} {problem}")
    return problems


def _takes(pm: pluggy.PluginManager, plugin: object, hook: str, argument: str) -> bool:
    """Whether ``plugin``'s implementation of ``hook`` names ``argument``
    (pluggy passes a hook only the arguments its implementation names: one it
    leaves out is dropped without a word)."""
    return any(impl.plugin is plugin and argument in impl.argnames
               for impl in getattr(pm.hook, hook).get_hookimpls())


def _endpoint_problem(endpoint: Any) -> str | None:
    """Why a limit's endpoint (the end of a URL path it counts) cannot match, if it cannot."""
    return None if str(endpoint).startswith("/") else "must start with '/' (the end of a URL path)"


def schema_problems(schema: EntitySchema) -> list[str]:
    """What makes an entity's schema unusable: with fields declared, an id or
    updated field not among them, a field type the hub does not know,
    sub-fields of a field that holds no object; filters that are not a
    tuple of names, or name a parameter of the list itself."""
    problems = []
    if schema.filters is not None and (not isinstance(schema.filters, (tuple, list)) or not all(
            isinstance(name, str) and name and name not in ("cursor", "limit", "since") for name in schema.filters)):
        problems.append(f"its filters {schema.filters!r} must be a tuple of filter names (not cursor, limit or "
                        f"since, which the list takes itself)")
    if schema.custom_fields is not None:
        try:
            re.compile(schema.custom_fields)
        except (re.error, TypeError) as exc:
            problems.append(f"its custom_fields {schema.custom_fields!r} is not a regular expression ({exc})")
    if schema.full_pass_hours is not None and (
            isinstance(schema.full_pass_hours, bool) or not isinstance(schema.full_pass_hours, (int, float))
            or not 0 < schema.full_pass_hours <= _TEN_YEARS_OF_HOURS):
        problems.append(f"its full_pass_hours {schema.full_pass_hours!r} must be a number of hours above 0, ten "
                        f"years at most (None: incremental passes miss nothing)")
    if not schema.fields:
        return problems
    names = [f.name for f in schema.fields]
    if schema.id_field not in names:
        problems.append(f"its id_field {schema.id_field!r} is not among its fields {names}: add it, or set "
                        f"id_field to the field that holds the provider's id")
    if schema.listed_for_days is not None and (not isinstance(schema.listed_for_days, int)
                                               or schema.listed_for_days < 2 or not schema.created_field):
        problems.append("its listed_for_days must be a number of days (2 or more) with a created_field "
                        "naming the creation time the window counts from")
    if schema.created_field and not _declared_path(schema, schema.created_field):
        problems.append(f"its created_field {schema.created_field!r} is not among its fields")
    if schema.updated_field and not _declared_path(schema, schema.updated_field):
        problems.append(f"its updated_field {schema.updated_field!r} is not among its fields {names} "
                        f"(a dotted path names a sub-field of an object field)")
    for f in schema.fields:
        problems += _field_problems(f, f.name)
    return problems


#: Longest full_pass_hours taken (longer would overflow the arithmetic of dates).
_TEN_YEARS_OF_HOURS = 10 * 365 * 24


def _declared_path(schema: EntitySchema, path: str) -> bool:
    """Whether a dotted path names a declared field (inside an object whose
    sub-fields are not declared, any path is taken)."""
    first, *rest = path.split(".")
    field = schema.field(first)
    for part in rest:
        if field is None or field.type != "object":
            return False
        if not field.fields:
            return True
        field = field.field(part)
    return field is not None


def _field_problems(f: Any, where: str) -> list[str]:
    """What is wrong with one field (``where``: its dotted name), and with its sub-fields."""
    problems = []
    if f.type not in FIELD_TYPES:
        problems.append(f"field {where!r} has type {f.type!r}, not one of {sorted(FIELD_TYPES)}")
    if f.fields:
        if f.type not in ("object", "array"):
            problems.append(f"field {where!r} is {f.type} but lists sub-fields: only an object or an array "
                            f"of objects has them")
        names = [inner.name for inner in f.fields]
        twice = sorted(n for n in set(names) if names.count(n) > 1)
        if twice:
            problems.append(f"field {where!r} lists the sub-fields {twice} twice")
        for inner in f.fields:
            problems += _field_problems(inner, f"{where}.{inner.name}")
    if f.create_only and f.readonly:
        problems.append(f"field {where!r} is both readonly and create_only: a create_only field is "
                        f"written when a record is created")
    if f.format and (f.type != "datetime" or f.format not in ("unix", "unix_ms")):
        problems.append(f"field {where!r} has format {f.format!r}: only a datetime field has one, "
                        f"'unix' or 'unix_ms'")
    return problems


def _hookimpl_names(plugin: object) -> list[str]:
    names = []
    for attr in dir(plugin):
        value = getattr(plugin, attr, None)
        if callable(value) and hasattr(value, "hub_impl"):
            names.append(attr)
    return names


def _distribution(entry_point: Any) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is not None:
        return dist.metadata["Name"], dist.version
    # stevedore's entry point cache drops the distribution: look it up.
    return _installed_entry_points().get((entry_point.name, entry_point.value), (None, None))


def _core_mismatch(dist: str | None, version: str | None) -> str | None:
    """Why the plugin distribution ``dist`` was not made for this hub, if its
    requirement on ``hub-core`` (its ``dependencies``) excludes the running
    core: pip installs a plugin beside a core it does not fit with a mere
    warning (``pip install -U hub-core``, ``--no-deps``), and the plugin
    would fail on a hook the contract changed, mid-request."""
    if not dist:
        return None
    try:
        requires = importlib.metadata.requires(dist) or []
        core = importlib.metadata.version(CORE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None  # (the core run from a checkout, not installed: nothing to compare)
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != CORE_DISTRIBUTION:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if not requirement.specifier.contains(core, prereleases=True):
            return (f"{dist} {version or ''} is made for hub-core{requirement.specifier}, and this hub is "
                    f"hub-core {core}: install a release of {dist} made for it (pip install -U {dist}), or "
                    f"a hub-core it names").replace("  ", " ")
    return None


def _installed_entry_points() -> dict[tuple[str, str], tuple[str, str]]:
    found = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found[(ep.name, ep.value)] = (dist.metadata["Name"], dist.version)
    return found


def _describe(error: BaseException) -> str:
    """The error, and where in the plugin it happened (the innermost frame
    outside the hub and pluggy): ``KeyError: 'label' (in provider_info, hub_acme/__init__.py:12)``."""
    text = f"{type(error).__name__}: {error}"
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith((_HUB_DIR, _PLUGGY_DIR)) and "importlib" not in f.filename]
    if frames:
        where = frames[-1]
        text += f" (in {where.name}, {'/'.join(Path(where.filename).parts[-2:])}:{where.lineno})"
    return text


_HUB_DIR = str(Path(__file__).parent)
_PLUGGY_DIR = str(Path(pluggy.__file__).parent)
