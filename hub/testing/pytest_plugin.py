"""pytest plugin registered through the ``pytest11`` entry point.

Gives every test session the ``fake_server`` helper; the provider conformance
suite lives in :mod:`hub.testing.conformance`.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def serve_app():
    """Serve ASGI apps on loopback for the duration of the test: ``url = serve_app(app)``."""
    from contextlib import ExitStack

    from hub.testing import serve

    with ExitStack() as stack:
        yield lambda app: stack.enter_context(serve(app))
