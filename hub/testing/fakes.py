"""Building blocks for fake provider servers.

Fakes must behave like the real APIs where plugins depend on them: these
helpers give them the providers' rate-limit behaviour and simple storage.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Decision:
    allowed: bool
    used: float
    limit: float
    retry_after: float


class LeakyBucket:
    """A provider-side leaky bucket (Shopify): ``capacity`` requests, leaking
    ``leak_per_second``. A request that would overflow is refused."""

    def __init__(self, capacity: int, leak_per_second: float):
        self.capacity = capacity
        self.leak = leak_per_second
        self.level = 0.0
        self.updated = time.monotonic()
        self._lock = threading.Lock()
        self.allowed = 0
        self.refused = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def hit(self) -> Decision:
        with self._lock:
            now = time.monotonic()
            self.level = max(0.0, self.level - (now - self.updated) * self.leak)
            self.updated = now
            if self.level + 1 > self.capacity:
                self.refused += 1
                return Decision(False, self.level, self.capacity, (self.level + 1 - self.capacity) / self.leak)
            self.level += 1
            self.allowed += 1
            self.first_at = self.first_at or now
            self.last_at = now
            return Decision(True, self.level, self.capacity, 0.0)

    def achieved_rate(self) -> float:
        """Allowed requests per second beyond the initial burst capacity."""
        if not self.first_at or not self.last_at or self.last_at == self.first_at:
            return 0.0
        return max(0, self.allowed - self.capacity) / (self.last_at - self.first_at)


class TokenBucketLimit(LeakyBucket):
    """A provider-side token bucket (Stripe: N requests per second): the same
    arithmetic as a leaky bucket whose capacity is the burst."""


class WindowLimit:
    """A provider-side window (Xero's 60 calls a minute, 5,000 a day): at most
    ``calls`` in any ``seconds``. A refused request is not counted;
    :meth:`remaining` is what a ``X-...-Remaining`` header would say."""

    def __init__(self, calls: int, seconds: float):
        self.calls, self.seconds = calls, seconds
        self.hits: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.allowed = 0
        self.refused = 0

    def _expire(self, now: float) -> None:
        while self.hits and self.hits[0] <= now - self.seconds:
            self.hits.popleft()

    def hit(self) -> Decision:
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            if len(self.hits) >= self.calls:
                self.refused += 1
                return Decision(False, len(self.hits), self.calls, self.hits[0] + self.seconds - now)
            self.hits.append(now)
            self.allowed += 1
            return Decision(True, len(self.hits), self.calls, 0.0)

    def give_back(self) -> None:
        """Uncount the last request allowed (refused by another limit after all)."""
        with self._lock:
            if self.hits:
                self.hits.pop()
                self.allowed -= 1

    def remaining(self) -> int:
        with self._lock:
            self._expire(time.monotonic())
            return self.calls - len(self.hits)


class Table:
    """An in-memory table of JSON records keyed by id, in insertion order."""

    def __init__(self, prefix: str = "", start: int = 1):
        self.rows: dict[str, dict[str, Any]] = {}
        self.prefix = prefix
        self._ids = itertools.count(start)
        self._lock = threading.Lock()

    def next_id(self) -> str:
        with self._lock:
            return f"{self.prefix}{next(self._ids)}"

    def insert(self, row: dict[str, Any], id_field: str = "id") -> dict[str, Any]:
        if id_field not in row:
            row[id_field] = self.next_id()
        self.rows[str(row[id_field])] = row
        return row

    def get(self, record_id: str) -> dict[str, Any] | None:
        return self.rows.get(str(record_id))

    def delete(self, record_id: str) -> dict[str, Any] | None:
        return self.rows.pop(str(record_id), None)

    def all(self) -> list[dict[str, Any]]:
        return list(self.rows.values())

    def __len__(self) -> int:
        return len(self.rows)


class Scripted:
    """A fake provider that answers some requests with what a test scripts.

    ``Scripted(app)`` serves ``app`` (any ASGI app: a plugin's fake) except
    for requests whose path ends with a scripted suffix: those take the
    next of its queued answers, ``(status, body, headers)``, a ``bytes`` body
    sent as it is and anything else as JSON (``NaN`` and all). For the odd
    answers real providers give now and then (a null list, an empty page
    said to be followed by more, the same cursor again), on top of a fake
    that otherwise behaves::

        fake = Scripted(create_fake())
        fake.script("/v1/customers", (200, {"data": [], "has_more": True}))
    """

    def __init__(self, app: Any):
        self.app = app
        self.queued: dict[str, list[tuple[int, Any, dict[str, str]]]] = {}
        self.answered: list[str] = []

    def script(self, path_suffix: str, *answers: tuple) -> None:
        self.queued.setdefault(path_suffix, []).extend(
            (a[0], a[1], dict(a[2]) if len(a) > 2 else {}) for a in answers)

    def __getattr__(self, name: str) -> Any:  # the fake's own state (``fake.state.store``)
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for suffix, answers in self.queued.items():
                if answers and scope["path"].endswith(suffix):
                    status, body, headers = answers.pop(0)
                    self.answered.append(scope["path"])
                    content = body if isinstance(body, bytes) else json.dumps(body).encode()
                    await send({"type": "http.response.start", "status": status, "headers": [
                        (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
                        *((k.lower().encode(), v.encode()) for k, v in headers.items())]})
                    await send({"type": "http.response.body", "body": content})
                    return
        await self.app(scope, receive, send)
