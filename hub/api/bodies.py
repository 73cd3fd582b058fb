"""Request bodies read as the hub can store them.

JSON as Python reads it takes ``NaN`` and ``Infinity`` (which JSON has not,
and which SQLite stores as null while PostgreSQL refuses them; nor numbers
such as ``1e400`` that Python reads as infinity) and escaped
lone surrogates (``"\\ud800"``: text that cannot be written out again as
UTF-8, so a record holding one could be stored but never shown). Both are
refused as invalid JSON, naming what is wrong, before a route sees the body;
so are NUL characters (PostgreSQL cannot store them in text; SQLite can, and
the answer must not depend on the database) and JSON nested deeper than
:data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400: beyond a double, Python reads it as infinity
        raise _Refused("a number is too large (beyond 1.8e308)")
    return number


#: Deepest nesting of a body's JSON: records are a few levels deep, and one
#: nested hundreds of levels could be stored but not written out again.
MAX_DEPTH = 64


def _check_text(value: Any) -> None:
    """Refuse lone surrogates and NUL characters, naming where (not the text:
    it may be a secret), and nesting deeper than :data:`MAX_DEPTH`."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Refused(f"the body is nested more than {MAX_DEPTH} levels deep (at {path[:200]})")
        if isinstance(item, str):
            where = f"at {path}" if path else "of the body"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _Refused(f"the text {where} holds a lone surrogate: it is not valid Unicode") from None
            if "\x00" in item:
                # Refused alike whatever the database: PostgreSQL cannot store it in text.
                raise _Refused(f"the text {where} holds a NUL character (\\u0000)")
        elif isinstance(item, dict):
            for key, child in item.items():
                name = str(key).encode("utf-8", "backslashreplace").decode()[:40]
                child_path = f"{path}.{name}" if path else name
                stack.append((key, f"{child_path} (the key)", depth))
                stack.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item))


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                parsed = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
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
