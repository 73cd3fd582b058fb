"""hub: a plugin-based integration hub.

Provider plugins import what they need from here::

    from hub import hookimpl
    from hub.types import ProviderInfo, EntitySchema, EntityField, Page
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("hub")

__all__ = ["hookimpl", "__version__"]
