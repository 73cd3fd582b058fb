"""The context the core passes to provider hooks as ``ctx``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hub.http import ProviderHTTP
from hub.types import ConfigurationError, ProviderInfo


@dataclass
class ProviderContext:
    """Everything a provider hook may use for one connection.

    - ``provider``: the provider's declared :class:`~hub.types.ProviderInfo`.
    - ``config``: the connection's non-secret config (shop domain, environment).
    - ``credentials``: the connection's decrypted secrets; never log them.
    - ``settings``: the operator's settings for this provider (OAuth client id
      and secret, ``origin`` to point the provider's URLs elsewhere), from
      ``HUB_<PROVIDER>_<KEY>`` environment variables.
    - ``http``: the connection's pooled client (auth, rate limits, retries and
      error mapping included).
    - ``connection_id``: the hub's id of the connection, ``None`` before one exists.
    - ``webhook_url``: the hub's public URL for this provider's webhook
      deliveries (with ``?connection_id=`` when there is a connection), for
      plugins that hand it to the provider (Plaid Link tokens, subscriptions).
    - ``account``: the provider-side account of the connection, as deliveries
      are routed by it: its ``webhook_key``, else the ``account`` its test
      named (``None`` before either is known). A ``verify_webhook`` of a
      delivery batching several accounts keeps the events of this one.
    """

    provider: ProviderInfo
    config: dict[str, Any]
    credentials: dict[str, Any]
    settings: dict[str, str]
    http: ProviderHTTP
    connection_id: str | None = None
    webhook_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    account: str | None = None

    def url(self, name: str = "api", path: str = "", **values: Any) -> str:
        """The provider URL ``name`` from ``ProviderInfo.urls``, formatted with
        ``values``, the connection config (its declared ``config_fields`` only),
        the settings and the provider's ``url_defaults`` (in that precedence),
        with ``path`` appended.

        When the operator set the provider setting ``origin`` (a fake server, a
        proxy), the scheme and host are replaced by it.

        :raises ConfigurationError: the template needs a value nobody gave.
        """
        try:
            template = self.provider.urls[name]
        except KeyError:
            raise ConfigurationError(f"provider {self.provider.name} declares no URL named {name!r}") from None
        try:
            # Only declared config shapes URLs: a tenant's other keys must not send requests elsewhere.
            declared = {f.name for f in self.provider.config_fields}
            config = {k: v for k, v in self.config.items() if k in declared}
            url = template.format(**{**self.provider.url_defaults, **self.settings, **config, **values})
        except KeyError as exc:
            raise ConfigurationError(
                f"provider {self.provider.name} needs {exc.args[0]!r} to build its {name} URL"
            ) from None
        origin = self.settings.get("origin")
        if origin:
            target = urlsplit(url)
            replacement = urlsplit(origin.rstrip("/"))
            url = urlunsplit((replacement.scheme, replacement.netloc,
                              replacement.path + target.path, target.query, target.fragment))
        return url + path

    def setting(self, key: str) -> str:
        """An operator setting that must be present.

        :raises ConfigurationError: naming the environment variable to set.
        """
        value = self.settings.get(key)
        if not value:
            raise ConfigurationError(
                f"provider {self.provider.name} needs the setting {key!r}: "
                f"set HUB_{self.provider.name.upper()}_{key.upper()}"
            )
        return value
