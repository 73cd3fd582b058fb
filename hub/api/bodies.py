"""Request bodies read as the hub can store them.

JSON as Python reads it takes ``NaN`` and ``Infinity`` (which JSON has not,
and which SQLite stores as null while PostgreSQL refuses them) and escaped
lone surrogates (``"\\ud800"``: text that cannot be written out again as
UTF-8, so a record holding one could be stored but never shown). Both are
refused as invalid JSON, naming what is wrong, before a route sees the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _check_text(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _Refused(f"a text holds a lone surrogate ({item[:40]!r}): it is not valid Unicode") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                parsed = json.loads(body, parse_constant=_no_constant)
                _check_text(parsed)
            except _Refused as exc:
                # FastAPI answers a JSONDecodeError as invalid JSON (hub.api.errors: invalid_json).
                raise json.JSONDecodeError(str(exc), "", 0) from None
            self._json = parsed
        return self._json


class HubRoute(APIRoute):
    """Every route of the API reads its JSON body with :class:`StrictJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))
        return strict
