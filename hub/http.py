"""The HTTP client the core hands to provider plugins as ``ctx.http``.

One pooled :class:`httpx.AsyncClient` per connection (``ClientPool``), shared
by every call made for that connection, with:

- a token bucket (or window count) for each of the provider's declared
  :class:`~hub.types.RateLimit`, re-synchronised with its usage headers, and
  a bound on the calls under way at once;
- retries with exponential backoff and full jitter on 429, 5xx and network
  errors, honouring ``Retry-After``;
- the mapping of error responses to :mod:`hub.types` errors.

Plugins call ``await ctx.http.request(...)`` (or ``get``/``post``/...); they
never sleep, retry or build clients themselves.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from hub.types import (
    AuthFailed,
    ErrorDescription,
    HubError,
    NotFound,
    PermissionDenied,
    ProviderError,
    ProviderUnavailable,
    RateLimit,
    RateLimited,
    RequestAuth,
    StaleVersion,
    ValidationFailed,
)

log = logging.getLogger("hub.http")
# httpx logs every request's URL at INFO (a plugin may put a key in the query)
# and httpcore every header at DEBUG: the hub logs requests itself, redacted.
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Methods a provider applies once however often they arrive.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Failures that happen before the request left: safe to retry any request.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class _Refusals:
    """What both limiters keep of a provider's refusal longer than calls wait."""

    #: Until when the provider refuses everything (a 429 asking a longer wait than the
    #: core retries after, a daily limit): calls fail at once instead of being sent.
    refused_until = 0.0
    #: Why, where it is not the provider's last refusal (the operator's share of an allocation).
    refused_because: str | None = None

    def refuse(self, seconds: float, because: str | None = None) -> None:
        """The provider asked for a wait longer than calls wait (:attr:`refused_until`)."""
        if time.monotonic() + seconds > self.refused_until:
            self.refused_because = because
        self.refused_until = max(self.refused_until, time.monotonic() + seconds)

    def refused_for(self) -> float:
        """Seconds the provider still refuses calls for (0: none)."""
        return max(0.0, self.refused_until - time.monotonic())

    #: 429s met since the last warning about them, and when that was (see :meth:`throttled`).
    unreported = 0
    reported_at = -math.inf

    def throttled(self) -> int:
        """Count a 429 met; the 429s to warn about now (0: warned less than
        a minute ago): operators see them at the default log level, at most
        once a minute per limit, however many a storm brings."""
        self.unreported += 1
        now = time.monotonic()
        if now - self.reported_at < 60:
            return 0
        count, self.unreported, self.reported_at = self.unreported, 0, now
        return count


class TokenBucket(_Refusals):
    """Client-side rate limiter: ``burst`` tokens, refilled at ``rate`` per second.

    ``acquire`` waits for a token; callers are served in arrival order. The
    refill runs ``margin`` below the declared rate: the provider's clock and
    ours differ by the network's jitter, and pacing exactly at the limit
    turns that jitter into occasional 429s.
    """

    def __init__(self, rate: float, burst: int, margin: float = 0.02):
        self.rate = self.declared_rate = rate * (1 - margin)
        self.capacity = max(1, burst)
        self.tokens = float(self.capacity)
        self.updated = time.monotonic()
        self.blocked_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, deadline: float = math.inf) -> int | None:
        """Wait for a token (the caller bounds the wait by its deadline)."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._refill(now)
                if now < self.blocked_until:
                    await asyncio.sleep(self.blocked_until - now)
                    continue
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)

    def observe_usage(self, used: float, limit: float, ticket: int | None = None) -> None:
        """The provider says ``used`` of its bucket of ``limit`` requests is
        taken: never be more optimistic. The bucket shrinks to the provider's,
        and a rate slowed by 429s (:meth:`pause`) recovers by a tenth whenever
        the provider's bucket is at least half empty again."""
        self._refill(time.monotonic())
        if limit <= 0:
            return
        self.capacity = max(1, min(self.capacity, int(limit)))
        remaining = max(0.0, limit - used)
        self.tokens = min(self.tokens, remaining)
        if remaining >= limit / 2:
            self.rate = min(self.declared_rate, self.rate * 1.1)

    def observe_remaining(self, remaining: float, ticket: int | None = None) -> None:
        self._refill(time.monotonic())
        self.tokens = min(self.tokens, remaining)

    def pause(self, seconds: float) -> None:
        """Block every caller for ``seconds`` (after a 429), and halve the
        pace: a 429 means we send faster than the provider drains (a rate set
        for a bigger plan, say), so the next ones do not follow at once. The
        429s of requests sent together (met while already paused) halve it once."""
        now = time.monotonic()
        if now >= self.blocked_until:
            self.rate = max(self.declared_rate / 64, self.rate / 2)
        self.blocked_until = max(self.blocked_until, now + seconds)
        self.tokens = 0

    def recover(self) -> None:
        """A request went through: a pace slowed by 429s grows back by a
        twentieth, up to the declared rate (providers whose answers tell the
        bucket's fill recover by :meth:`observe_usage` instead)."""
        if self.rate < self.declared_rate:
            self.rate = min(self.declared_rate, self.rate * 1.05)

    def sending(self, ticket: int | None = None) -> None:
        """A bucket counts a request when it is acquired: nothing to do."""

    def done(self, ticket: int | None = None) -> None:
        """A bucket counts a request when it is acquired: nothing to do."""

    def release(self, ticket: int | None = None) -> None:
        """The request acquired for was not sent: its token is given back."""
        self.tokens = min(self.capacity, self.tokens + 1)


#: How long calls a provider counts but this hub did not send hold a window's places, at most.
UNKNOWN_CALLS_RECHECKED = 60.0


class WindowCount(_Refusals):
    """Client-side count of a provider's window limit: at most ``limit``
    requests in any ``window`` seconds (Xero's 60 per minute, 5,000 per day).

    A request counts from :meth:`acquire`, and is dated when its answer came
    (:meth:`done`): the provider counted it before that, so it leaves the
    provider's window before it leaves this one, whatever the network's
    delays. Counted over a sliding window, which keeps within a provider's
    fixed windows too. The same interface as :class:`TokenBucket`.
    """

    def __init__(self, limit: int, window: float, learns: bool = False):
        self.capacity = max(1, limit)
        self.window = window
        self.sent: deque[float] = deque()
        self.in_flight = 0
        #: The provider's answers tell what is left (``learns``) and none came yet: one call at
        #: a time until one does (after a restart, the calls sent at once before the first answer
        #: could all be over a window others had used).
        self.awaiting_first_answer = learns
        #: Calls acquired so far, and where the latest call whose answer's figure was taken
        #: stands: (1, its send number), or (0, its ticket) when it was not told it went out.
        self.issued = 0
        self.observed: tuple[int, int] = (0, 0)
        self.blocked_until = 0.0
        #: The dates given to calls the provider counts and this hub did not send, in a long
        #: window: a guess, which a call does not wait on (see :meth:`_set_available`).
        self.guessed: set[float] = set()
        #: The calls sent and not answered yet, by ticket: the order they went out in (tickets
        #: follow the order calls began waiting, which other waits reorder), and the place in that
        #: order of the call last answered (:meth:`sending`, :meth:`done`).
        self.going: dict[int, int] = {}
        self.sends = 0
        self.answered: tuple[int | None, int] = (None, 0)
        self._lock = asyncio.Lock()
        self._answered = asyncio.Event()

    def _expire(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - self.window:
            self.sent.popleft()
        if self.guessed:
            self.guessed = {dated for dated in self.guessed if dated > now - self.window}

    def guess_wait(self) -> float:
        """Seconds until the place a call waits for frees, when a call the
        provider counted and this hub did not send holds it (its date a
        guess); 0 when none does."""
        over = len(self.sent) + self.in_flight - self.capacity
        if self.guessed and 0 <= over < len(self.sent) and self.sent[over] in self.guessed:
            return max(0.0, self.sent[over] + self.window - time.monotonic())
        return 0.0

    def wait_needed(self) -> float:
        """Seconds until a request may go: 0 now, ``inf`` when only an answer
        under way can free a place."""
        now = time.monotonic()
        self._expire(now)
        wait = max(0.0, self.blocked_until - now)
        over = len(self.sent) + self.in_flight - self.capacity  # places to free before one more may go
        if self.awaiting_first_answer and self.in_flight:
            return math.inf
        if over >= 0:
            wait = max(wait, self.sent[over] + self.window - now if over < len(self.sent) else math.inf)
        return wait

    async def acquire(self, deadline: float = math.inf) -> int:
        """Wait for a place; :class:`WindowFull` at once when the window frees
        only after ``deadline`` (a monotonic time). Returns the call's ticket,
        to give with what its answer says (:meth:`observe_remaining`)."""
        async with self._lock:
            while (wait := self.wait_needed()) > 0:
                guessed = self.guess_wait()
                # Answers that may set the count right: those of calls sent after the last one whose
                # figure was taken (a provider whose figure counted them already); an earlier call's
                # figure is stale, and frees nothing.
                correcting = any((1, order) > self.observed for order in self.going.values())
                if time.monotonic() + wait > deadline or (guessed and not correcting and guessed >= (
                        self.blocked_until - time.monotonic())):
                    # (An answer under way, inf, may free one sooner.) Not waited on either: a place a
                    # guess holds (the provider said none was left of its day), unless a 429's pause
                    # lasts longer or such an answer is under way: the call would go after a minute
                    # only to be refused, and its caller would have waited for nothing.
                    if not math.isinf(wait):
                        raise WindowFull(self, wait)
                self._answered.clear()
                try:
                    async with asyncio.timeout(None if math.isinf(wait) else wait):
                        await self._answered.wait()
                except TimeoutError:
                    pass
            self.in_flight += 1
            self.issued += 1
            return self.issued

    def sending(self, ticket: int | None = None) -> None:
        """The request of ``ticket`` goes out now (past every wait, the account's
        bound on calls under way included): the provider may count it from now."""
        if ticket is not None:
            self.sends += 1
            self.going[ticket] = self.sends

    def done(self, ticket: int | None = None) -> None:
        """The request acquired for has its answer (or may have reached the provider)."""
        self.in_flight = max(0, self.in_flight - 1)
        self.answered = (ticket, self.going.pop(ticket, 0)) if ticket is not None else (None, 0)
        self.awaiting_first_answer = False
        self.sent.append(time.monotonic())
        self._answered.set()

    def release(self, ticket: int | None = None) -> None:
        """The request acquired for was not sent: it does not count."""
        self.in_flight = max(0, self.in_flight - 1)
        if ticket is not None:
            self.going.pop(ticket, None)
        self._answered.set()

    def _set_available(self, available: float, ticket: int | None = None) -> None:
        """The provider's figure is taken as said, either way: a fixed window it
        has started again frees ours, and calls it counts that this hub did
        not send (other processes', this one's before a restart) count as
        sent now, though for a minute at most in a window longer than five
        (a day): when they were sent is unknown, so a call then asks again
        (its answer tells what is left, or a 429 how long to wait). Meanwhile
        a call needing one of those places fails at once rather than waiting
        that minute (:class:`WindowFull`), unless an answer under way may set
        the count right. The calls under way sent before the one answered are
        not among them (the provider counted them on arrival; they are dated
        when answered); those sent after it count on top of its figure: the
        provider may not have seen them yet."""
        now = time.monotonic()
        self._expire(now)
        wanted = self.capacity - int(min(self.capacity, max(0.0, available)))
        # Where the answered call stands among those sent (its send number; its ticket where it
        # was not told it went out): an answer to a call sent before one whose figure was taken
        # already was counted before that one, and its figure is stale (answers come in any
        # order): only a lower one is taken.
        sent_as = self.answered[1] if ticket is not None and self.answered[0] == ticket else 0
        position = (1, sent_as) if sent_as else (0, ticket)
        if ticket is not None and position < self.observed:
            wanted = max(wanted, len(self.sent))
        elif ticket is not None:
            self.observed = position
        while len(self.sent) > wanted:
            self.sent.popleft()
        # The provider counts a call when it arrives: the calls under way sent before the one
        # answered are among those it counted, and are dated when answered (counted twice, this
        # hub's own calls held places it had). Only the rest are calls this hub did not send; those
        # sent after it, or not sent yet, it has not seen, and they count on top.
        missing = wanted - len(self.sent) - sum(1 for order in self.going.values() if order < sent_as)
        if missing > 0 and self.window <= UNKNOWN_CALLS_RECHECKED * 5:
            self.sent = deque(sorted([*self.sent, *[now] * missing]))
        elif missing > 0:  # (their date a guess in a long window)
            dated = now - self.window + UNKNOWN_CALLS_RECHECKED
            self.guessed.add(dated)
            self.sent = deque(sorted([*self.sent, *[dated] * missing]))
        self._answered.set()

    def observe_usage(self, used: float, limit: float, ticket: int | None = None) -> None:
        if limit > 0:
            self._set_available(limit - used, ticket)

    def observe_remaining(self, remaining: float, ticket: int | None = None) -> None:
        self._set_available(remaining, ticket)

    def pause(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)

    def recover(self) -> None:
        """Nothing to recover: a window's count is what it is."""


Limiter = TokenBucket | WindowCount


@dataclass(frozen=True)
class Allocation:
    """The operator's share of an account's allocation of calls over a long
    period (``ProviderInfo.allocation_header``; setting ``allocation_share``):
    once the provider says that share is used, the connection's calls are
    refused unsent for ``wait`` seconds, leaving the rest to the account's
    other apps and people."""

    header: str
    share: float
    wait: float

    def observe(self, value: str | None, limiter: Limiter) -> None:
        used_limit = _usage(value.rpartition("=")[2]) if value else None
        if used_limit is None:
            return
        used, limit = used_limit
        if limit > 0 and used >= self.share * limit and limiter.refused_for() <= 0:
            log.warning("the provider's allocation is %d%% used (%s of %s): this hub's share is %d%%, so the "
                        "connection's calls wait %.0f s (HUB_<PROVIDER>_ALLOCATION_SHARE)",
                        100 * used // limit, f"{used:g}", f"{limit:g}", round(self.share * 100), self.wait)
            limiter.refuse(self.wait, f"{100 * used / limit:.0f}% of the account's allocation of calls is used, "
                                      f"and this hub may use {self.share:.0%} of it")


def _usage(value: str) -> tuple[float, float] | None:
    """``used/limit`` as two finite numbers, or None."""
    used, slash, total = value.partition("/")
    if not slash:
        return None
    try:
        used_count, limit_count = float(used), float(total)
    except ValueError:
        return None
    return (used_count, limit_count) if math.isfinite(used_count) and math.isfinite(limit_count) else None


class WindowFull(Exception):
    """A window frees a place only after the call's deadline: ``wait`` seconds."""

    def __init__(self, window: WindowCount, wait: float):
        super().__init__(wait)
        self.window, self.wait = window, wait


def _span(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}s" if count > 1 else unit
    return f"{seconds:g} s"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "inf", "nan" or 1e400 would overflow what is done with it: not a wait anyone means.
        return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)


#: Longest ``Retry-After`` taken as meant (a day); longer ones are cut to it.
MAX_RETRY_AFTER = 86400.0


@dataclass
class RetryPolicy:
    """``attempts`` bounds the tries after errors (5xx, network); 429s the
    provider asks to wait out (``Retry-After``) count against ``throttled_wait``
    seconds of waiting instead; no request goes on past ``deadline`` seconds."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    throttled_wait: float = 120.0
    deadline: float = 90.0
    #: Largest answer read (decoded: a small gzip body can inflate a thousandfold).
    max_response_bytes: int = 32 * 2**20

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))


AuthSource = Callable[[], Awaitable[RequestAuth]]
ErrorDescriber = Callable[[httpx.Response], Awaitable["HubError | ErrorDescription | str | None"]]
Refresher = Callable[[], Awaitable[bool]]


def error_for_response(response: httpx.Response, described: HubError | ErrorDescription | str | None) -> HubError:
    """Map a failed provider response to a hub error: the class its status
    calls for, with what ``describe_error`` said (or the error it chose)."""
    if isinstance(described, HubError):
        if described.provider_status is None:
            described.provider_status = response.status_code
        if isinstance(described, RateLimited) and described.retry_after is None:
            # The plugin named the limit; the provider's header still says how long it lasts.
            described.retry_after = parse_retry_after(response.headers.get("retry-after"))
        return described
    status = response.status_code
    kwargs: dict[str, Any] = {"provider_status": status}
    if isinstance(described, ErrorDescription):
        kwargs.update(fields=described.fields, details=described.details, code=described.code)
        described = described.message
    message = described or f"provider answered HTTP {status}"
    if status == 401:
        return AuthFailed(message, **kwargs)
    if status == 403:
        return PermissionDenied(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 412:  # a precondition (If-Match: the version written on) failed: changed there since
        return StaleVersion(message, **kwargs)
    if status in (400, 409, 422):
        return ValidationFailed(message, **kwargs)
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(response.headers.get("retry-after")), **kwargs)
    if status >= 500:
        return ProviderUnavailable(message, **kwargs)
    return ProviderError(message, **kwargs)


class ProviderHTTP:
    """The client a plugin sees as ``ctx.http``: one connection's view of a
    pooled ``httpx.AsyncClient`` with auth, rate limits, retries and error
    mapping applied."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        limiter: TokenBucket | None,
        rate_limit: RateLimit | None,
        auth: AuthSource | None = None,
        describe_error: ErrorDescriber | None = None,
        refresh: Refresher | None = None,
        retry: RetryPolicy | None = None,
        rebase: Callable[[str, Any], str] | None = None,
        config_now: Callable[[], Any] | None = None,
        endpoint_limiters: dict[str, Limiter] | None = None,
        limits: Sequence[tuple[RateLimit, Limiter]] = (),
        concurrency: asyncio.Semaphore | None = None,
        allocation: Allocation | None = None,
        unmetered: Callable[[str], bool] | None = None,
        traces_sending: bool = False,
    ):
        self.client = client
        #: Whether the client's transport is httpx's own, whose trace tells when a request
        #: leaves: a call that timed out before that (queued for one of the pool's
        #: connections) was not sent. Another transport (a test's) is taken to send at once.
        self.traces_sending = traces_sending
        #: Whether a URL is one whose calls no limit of the account counts (``ProviderInfo.unmetered_urls``).
        self._unmetered = unmetered
        self.allocation = allocation
        self.limiter = limiter
        self.endpoint_limiters = endpoint_limiters or {}
        #: The provider's further limits and their counters, shortest window first: a call
        #: holds its place in a short window while it waits for a long one, never the reverse.
        self.limits = sorted(limits, key=lambda pair: pair[0].window_seconds)
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self._auth = auth
        self._describe_error = describe_error
        self._refresh = refresh
        #: The URL a call retried after a refresh goes to: where the refresh moved the provider's host
        #: (``rebase(url, config the url was built with)``; ``config_now()`` tells that config).
        self._rebase = rebase
        self._config_now = config_now
        self.retry = retry or RetryPolicy()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        raise_for_status: bool = True,
        idempotent: bool | None = None,
        authenticate: bool = True,
        path_in_logs: str | None = None,
        unwrap: Callable[[httpx.Response], httpx.Response | None] | None = None,
    ) -> httpx.Response:
        """Send a request; return the successful response.

        ``authenticate=False`` sends it without the connection's
        ``request_auth`` (to a token endpoint, which takes the app's client
        credentials instead of the token being refreshed).

        The hub's log names a request by its URL's path (its query can carry
        credentials); ``path_in_logs`` is what it shows instead where the path
        itself holds a secret (HubSpot revokes ``/oauth/v1/refresh-tokens/{token}``).

        ``unwrap`` reads, from a successful (2xx) answer, the answer of the
        one request it carries (a Salesforce composite call's subrequest,
        whose failure comes within a 200), or None where it carries none: the
        core then takes that answer for the provider's, its status retried,
        refreshed after a 401, described and raised as a direct call's would
        be, and returns it when it succeeds. The limits' headers are read
        from the whole answer, which is what the provider counted.

        Retries with backoff on 429, 5xx (``retry_statuses``) and network
        errors, honouring ``Retry-After``; the same request (headers such as
        ``Idempotency-Key`` included) is re-sent each time. A request that is
        not ``idempotent`` (default: by method, GET/PUT/DELETE are; a POST or
        PATCH is when it carries an ``Idempotency-Key``) is only re-sent when
        the provider cannot have applied it (a 429, a connection never made):
        after a 5xx or a timeout it may have, and sending it again could apply
        it twice (a second order, stock adjusted twice). With
        ``raise_for_status`` an error response becomes a hub error.

        :raises AuthFailed, NotFound, ValidationFailed, RateLimited,
            ProviderUnavailable, ProviderError: as the response says.
        """
        shown = _path(url) if path_in_logs is None else path_in_logs
        built_with = self._config_now() if self._config_now else None  # (what the url was made of)
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS or any(
                k.lower() == "idempotency-key" for k in (headers or {}))
        refreshed = False
        attempt = 0
        throttled = 0.0
        deadline = time.monotonic() + self.retry.deadline
        long_wait = None
        # A call outside the account's budget (Xero's /connections, no tenant's call) waits for,
        # spends, re-synchronises and pauses none of its limits, nor takes a place among its calls at once.
        metered = not (self._unmetered and self._unmetered(url))
        connection_limiter = self.limiter if metered else None
        concurrency = self.concurrency if metered else None
        endpoint_limiter = self._endpoint_limiter(url) if metered else None
        path = httpx.URL(url).path
        limits = [(limit, limiter) for limit, limiter in self.limits
                  if metered and (not limit.endpoint or path.endswith(limit.endpoint))]
        limiters = [limiter for limiter in (endpoint_limiter, connection_limiter) if limiter]
        limiters += [limiter for _, limiter in limits]
        while True:
            auth = await self._auth() if self._auth and authenticate else RequestAuth()
            merged_params = _merge_params(params, auth.params)
            merged_headers = {**auth.headers, **(headers or {})}
            for limiter in limiters:
                if (left := limiter.refused_for()) > 0:
                    # A 429 asked for a longer wait than calls wait: sent now, this one would be
                    # refused too (and count against the limit at some providers).
                    because = limiter.refused_because or "as its last refusal said"
                    raise RateLimited(f"the provider's rate limit refuses calls for {left:.0f} s more ({because}); "
                                      f"nothing was sent", retry_after=max(1.0, left))
            acquired: list[Limiter] = []
            tickets: dict[int, int | None] = {}
            holding = False  # a place among the account's calls under way at once
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    for limiter in limiters:
                        tickets[id(limiter)] = await limiter.acquire(deadline)
                        acquired.append(limiter)
                    if concurrency:
                        await concurrency.acquire()
                        holding = True
                for limiter in acquired:
                    limiter.sending(tickets[id(limiter)])
            except WindowFull as full:
                self._give_back(acquired, holding)
                # A window that frees only past the call's deadline (a daily quota) is said at
                # once, with when it frees, rather than waited on.
                raise RateLimited(f"the provider's limit of {full.window.capacity} calls per "
                                  f"{_span(full.window.window)} is used up for {full.wait:.0f} s more; nothing was "
                                  f"sent", retry_after=max(1.0, full.wait)) from None
            except TimeoutError:
                self._give_back(acquired, holding)
                # Nothing was sent: the provider's pace leaves no room within the call's deadline.
                raise RateLimited(f"the provider's rate limit left no room to send the {method} within "
                                  f"{self.retry.deadline:g} s; nothing was sent",
                                  retry_after=max(1.0, self.retry.base_delay)) from None
            except BaseException:  # cancelled while waiting: the places taken are given back
                self._give_back(acquired, holding)
                raise
            sent = True
            leaving = _Departure()
            try:
                if self.client.is_closed:
                    # The connection's client closes when the connection is deleted (or the hub stops).
                    sent = False
                    raise NotFound("the connection was deleted or the hub is stopping", code="connection_closed")
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        response = await self._send(method, url, merged_params, json, data, merged_headers,
                                                    leaving if self.traces_sending else None)
                except (*NOT_SENT, httpx.LocalProtocolError, UnicodeEncodeError):
                    sent = False  # (never left: it does not count against the provider's windows)
                    raise
                except TimeoutError:
                    sent = self.traces_sending is False or leaving.started
                    raise
                finally:
                    if holding and concurrency:
                        concurrency.release()
                    for limiter in acquired:
                        ticket = tickets[id(limiter)]
                        limiter.done(ticket) if sent else limiter.release(ticket)
            except (httpx.LocalProtocolError, UnicodeEncodeError):
                # Not the provider's fault: nothing was sent (and the message would show the value).
                raise ValidationFailed(
                    "the request cannot be sent: a header or URL would hold a line break, control or non-ASCII "
                    "character; check the connection's credentials and configuration", code="invalid_value") from None
            except TimeoutError:
                if not sent and leaving.connecting:
                    raise ProviderUnavailable(f"could not connect to the provider within {self.retry.deadline:g} "
                                              f"s; nothing was sent") from None
                if not sent:
                    raise ProviderUnavailable(
                        f"no connection to the provider came free within {self.retry.deadline:g} s (the "
                        f"connection's other calls held them all); nothing was sent") from None
                raise ProviderUnavailable(
                    f"provider gave no answer within {self.retry.deadline:g} s" + (
                        "" if idempotent else f"; it may have applied the {method}, so check before repeating it"),
                    maybe_applied=not idempotent) from None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if not (idempotent or isinstance(exc, NOT_SENT)):
                    raise ProviderUnavailable(
                        f"provider did not answer a {method} ({type(exc).__name__}); it may have applied it, "
                        f"so it was not sent again: check before repeating it", maybe_applied=True) from None
                delay = self.retry.backoff(attempt)
                if attempt + 1 >= self.retry.attempts or time.monotonic() + delay > deadline:
                    raise ProviderUnavailable(
                        f"provider unreachable after {attempt + 1} attempts: {type(exc).__name__}"
                    ) from None
                log.info("network error %s on %s %s; retry in %.2fs", type(exc).__name__, method, shown, delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if metered:
                self._observe_headers(response, limits, tickets)
            if unwrap is not None and 200 <= response.status_code < 300:
                response = unwrap(response) or response
            status = response.status_code
            if status == 401 and self._refresh and not refreshed:
                refreshed = True
                if await self._refresh():
                    if self._rebase is not None:
                        url = self._rebase(url, built_with)
                        shown = _path(url) if path_in_logs is None else path_in_logs
                    continue
            retry = status in retry_statuses and (status == 429 or idempotent)
            # The limit a 429 is about: the one the provider names, else the endpoint's, else the connection's.
            met = endpoint_limiter or connection_limiter
            if status == 429 and connection_limiter and (count := connection_limiter.throttled()):
                log.warning("the provider refused %d call(s) with 429 (rate limited) since this was last logged "
                            "for its limit (at most once a minute), the last one %s %s: the hub slows down and "
                            "retries. Many mean calls above the provider's limit: other hub processes or apps "
                            "sharing the account's budget, or a declared rate above the account's plan "
                            "(HUB_<PROVIDER>_REQUESTS_PER_SECOND)", count, method, shown)
            if retry:
                asked = parse_retry_after(response.headers.get("retry-after"))
                if status == 429 and self._describe_error and (asked is None or any(l.name for l, _ in limits)):
                    # The body or a header may say which limit it was (HubSpot's policyName, Xero's
                    # X-Rate-Limit-Problem), and so how long it lasts. A daily limit is not retried for nothing.
                    said = await self._described(response, method, shown)
                    if isinstance(said, RateLimited):
                        met = self._named(said.limit, limits) or met
                        if asked is None and said.retry_after is not None:
                            asked = said.retry_after
                if asked is not None and asked < self.retry.base_delay:
                    asked = None  # "0" (or a date past): waiting nothing would hammer the provider
                wait = self.retry.backoff(attempt) if asked is None else asked + random.uniform(0, 0.05)
                if asked is not None and asked > self.retry.max_delay:
                    retry = False  # sent again sooner than asked, it would only be refused again
                    long_wait = asked if status == 429 else None
                elif status == 429 and asked is not None:
                    # The provider said how long to wait: that costs waiting time, not an attempt.
                    retry = throttled + wait <= self.retry.throttled_wait
                    throttled += wait
                else:
                    retry = attempt + 1 < self.retry.attempts
                    attempt += 1
                retry = retry and time.monotonic() + wait <= deadline
            if retry:
                # A limit of one endpoint (Plaid's per Item) slows that endpoint, not the connection.
                paused = met
                if status == 429 and paused:
                    paused.pause(wait)
                log.info("HTTP %s on %s %s; retry in %.2fs", status, method, shown, wait)
                await response.aclose()
                if not (status == 429 and paused):
                    await asyncio.sleep(wait)
                continue
            if status < 400:
                for limiter in limiters:
                    if not (limiter is connection_limiter and self.rate_limit and self.rate_limit.usage_header):
                        limiter.recover()
            if 300 <= status < 400 and raise_for_status:
                # Not followed: credentials must not go to wherever a redirect points.
                await response.aclose()
                raise ProviderError(f"provider answered HTTP {status}, a redirect{_redirect_host(response)}, "
                                    "which the hub does not follow", provider_status=status)
            if status >= 400 and raise_for_status:
                error = error_for_response(response, await self._described(response, method, shown))
                if isinstance(error, ProviderUnavailable) and error.retry_now and idempotent:
                    # The provider says the same request will go through shortly (Stripe's
                    # Should-Retry on a key whose first request is still executing).
                    asked = parse_retry_after(response.headers.get("retry-after"))
                    wait = self.retry.backoff(attempt) if asked is None else min(asked, self.retry.max_delay)
                    if attempt + 1 < self.retry.attempts and time.monotonic() + wait <= deadline:
                        attempt += 1
                        log.info("HTTP %s on %s %s (the provider says retry); retry in %.2fs", status, method,
                                 shown, wait)
                        await asyncio.sleep(wait)
                        continue
                if isinstance(error, ProviderUnavailable) and not idempotent:
                    error.maybe_applied = True
                if isinstance(error, RateLimited) and not long_wait and error.retry_after is not None \
                        and math.isfinite(error.retry_after) and error.retry_after > self.retry.max_delay:
                    # A quota the plugin read from another status (Salesforce's 403
                    # REQUEST_LIMIT_EXCEEDED): each call sent before it resets counts against it too.
                    long_wait = error.retry_after
                if isinstance(error, RateLimited):
                    met = self._named(error.limit, limits) or met
                if isinstance(error, RateLimited) and long_wait and met:
                    met.refuse(long_wait)
                if isinstance(error, RateLimited) and (error.retry_after is None or error.retry_after < 1):
                    # Tell the client how long to wait even when the provider did not (or said 0).
                    error.retry_after = max(1.0, self.retry.backoff(attempt))
                raise error
            return response

    async def _send(self, method: str, url: str, params: Any, json: Any, data: Any,
                    headers: dict[str, str], leaving: _Departure | None = None) -> httpx.Response:
        """One request, its answer read whole but no larger than ``max_response_bytes``;
        ``leaving`` notes when the request starts to leave.

        :raises ProviderError: the answer is larger.
        """
        request = self.client.build_request(method, url, params=params, json=json, data=data, headers=headers)
        if leaving is not None:
            request.extensions["trace"] = leaving.trace
        streamed = await self.client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in streamed.aiter_bytes():
                body += chunk
                if len(body) > self.retry.max_response_bytes:
                    raise ProviderError(f"provider answered the {method} with more than "
                                        f"{self.retry.max_response_bytes / 2**20:g} MB; not read",
                                        provider_status=streamed.status_code)
        finally:
            await streamed.aclose()
        # Decoded already: the encoding headers no longer describe the body.
        headers_out = [(k, v) for k, v in streamed.headers.multi_items()
                       if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        return httpx.Response(streamed.status_code, headers=headers_out, content=bytes(body), request=request,
                              extensions=streamed.extensions)

    def _give_back(self, acquired: list[Limiter], holding: bool) -> None:
        for limiter in acquired:
            limiter.release()
        if holding and self.concurrency:
            self.concurrency.release()

    @staticmethod
    def _named(name: str | None, limits: list[tuple[RateLimit, Limiter]]) -> Limiter | None:
        if not name:
            return None
        found = next((limiter for limit, limiter in limits if (limit.name or "").lower() == name.lower()), None)
        if found is None and limits:
            log.warning("the provider named a rate limit %r that none of its declared limits is named: "
                        "the connection's (or endpoint's) limit is paused instead", name)
        return found

    def _endpoint_limiter(self, url: str) -> Limiter | None:
        if not self.endpoint_limiters:
            return None
        path = httpx.URL(url).path
        for suffix, limiter in self.endpoint_limiters.items():
            if path.endswith(suffix):
                return limiter
        return None

    def _observe_headers(self, response: httpx.Response, limits: list[tuple[RateLimit, Limiter]],
                         tickets: dict[int, int | None]) -> None:
        if self.allocation is not None and self.limiter is not None:
            self.allocation.observe(response.headers.get(self.allocation.header), self.limiter)
        pairs = [(self.rate_limit, self.limiter)] if self.limiter and self.rate_limit else []
        for limit, limiter in pairs + limits:
            if limit.usage_header:
                value = response.headers.get(limit.usage_header)
                if value and (usage := _usage(value)) is not None:
                    limiter.observe_usage(*usage, tickets.get(id(limiter)))
            if limit.remaining_header:
                value = response.headers.get(limit.remaining_header)
                if value:
                    try:
                        remaining = float(value)
                    except ValueError:
                        pass
                    else:
                        if math.isfinite(remaining):
                            limiter.observe_remaining(remaining, tickets.get(id(limiter)))

    async def _described(self, response: httpx.Response, method: str, url: str) -> Any:
        """What the plugin's ``describe_error`` reads from an error response;
        None where it has none, or cannot read the body (a proxy's empty or
        HTML answer): the status still says what happened, under a generic
        message, rather than an opaque failure of the plugin."""
        if not self._describe_error:
            return None
        try:
            return await self._describe_error(response)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("describe_error could not read HTTP %s on %s %s: %s", response.status_code, method,
                        _path(url), type(exc).__name__)
            return None

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    async def json(self, method: str, url: str, *, key: str | None = None, **kwargs: Any) -> Any:
        """``request`` and decode the JSON body; with ``key``, return that member
        of the object (``key="product"`` unwraps ``{"product": {...}}``)."""
        return read_json(await self.request(method, url, **kwargs), key)


def read_json(response: httpx.Response, key: str | None = None) -> Any:
    """The response's JSON (``{}`` for a 204), or its member ``key``; the
    non-JSON constants ``NaN`` and ``Infinity`` read as null.

    :raises ProviderError: the body is not JSON, or lacks ``key``.
    """
    if not response.content and response.status_code != 204:
        # An answer with no body where one was expected: not an empty record.
        raise ProviderError(f"provider answered HTTP {response.status_code} with an empty body")
    try:
        # NaN and Infinity are not JSON: null, as the hub stores and answers them (a record
        # holding one could not be written out, and a listing of it was a 500).
        body = response.json(parse_constant=lambda _constant: None) if response.content else {}
    except ValueError:
        raise ProviderError(
            f"provider answered HTTP {response.status_code} with a body that is not JSON"
        ) from None
    except RecursionError:
        raise ProviderError(
            f"provider answered HTTP {response.status_code} with JSON nested too deep to read"
        ) from None
    if _SURROGATE_ESCAPE.search(response.content):
        body = mend_surrogates(body)
    if key is None:
        return body
    if not isinstance(body, dict) or key not in body:
        raise ProviderError(f"provider answered HTTP {response.status_code} without {key!r}")
    return body[key]


#: A UTF-16 surrogate written as a JSON escape (``\ud800``): only in a body that may hold a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def mend_surrogates(value: Any) -> Any:
    """``value`` (parsed JSON) with every lone UTF-16 surrogate in its text,
    keys too, replaced by U+FFFD. JSON allows ``"\ud800"`` (JavaScript
    writes it for a string cut in the middle of an emoji); no UTF-8 text holds
    it, so a record with one could be neither stored nor written out, and
    every try failed alike. (A pair written as two escapes is one character
    once parsed: only lone halves remain to mend.) Without any, ``value``
    itself is returned."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        pairs = [(mend_surrogates(key), mend_surrogates(item)) for key, item in value.items()]
        unchanged = all(key is old_key and item is old_item
                        for (key, item), (old_key, old_item) in zip(pairs, value.items()))
        return value if unchanged else dict(pairs)
    if isinstance(value, list):
        items = [mend_surrogates(item) for item in value]
        return value if all(new is old for new, old in zip(items, value)) else items
    return value


def _redirect_host(response: httpx.Response) -> str:
    """`` to <host>`` of a redirect's Location, for the error message."""
    where = response.headers.get("location", "")
    try:
        host = httpx.URL(where).host if where else ""
    except (httpx.InvalidURL, ValueError):
        return ""
    return f" to {host}" if host else (" to the same host" if where else "")


def _merge_params(params: Any, extra: dict[str, str]) -> Any:
    if not extra:
        return params
    if params is None:
        return dict(extra)
    if isinstance(params, dict):
        return {**params, **extra}
    return list(params) + list(extra.items())


def _path(url: str) -> str:
    # Log the path only: query strings can carry credentials.
    return url.split("?", 1)[0]


class _Departure:
    """Whether a request started to leave (httpcore's trace of its headers
    being sent): before that it waits for one of the pool's connections, or
    for its own to be opened (``connecting``)."""

    started = connecting = False

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_headers.started"):
            self.started = True
        elif event.endswith(("connect_tcp.started", "start_tls.started")):
            self.connecting = True


class ClientPool:
    """One ``httpx.AsyncClient`` and one rate limiter per connection.

    Keys are connection ids (or ``app:<provider>`` for calls made before a
    connection exists). Clients live until ``close`` (application shutdown) or
    ``discard`` (connection deleted).
    """

    def __init__(self, timeout: httpx.Timeout = DEFAULT_TIMEOUT, transport: httpx.AsyncBaseTransport | None = None,
                 retry: RetryPolicy | None = None):
        self.timeout = timeout
        self.transport = transport
        self.retry = retry or RetryPolicy()
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._limiters: dict[str, Limiter] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    @property
    def traces_sending(self) -> bool:
        """Whether the clients' transport is httpx's own (see ``ProviderHTTP.traces_sending``)."""
        return self.transport is None

    def client(self, key: str) -> httpx.AsyncClient:
        client = self._clients.get(key)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                timeout=self.timeout,
                transport=self.transport,
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
                headers={"User-Agent": "hub/0.1 (+https://github.com/hub)"},
            )
            self._clients[key] = client
        return client

    def limiter(self, key: str, rate_limit: RateLimit | None) -> Limiter | None:
        if rate_limit is None:
            return None
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = (WindowCount(rate_limit.burst, rate_limit.window_seconds,
                                   learns=bool(rate_limit.remaining_header or rate_limit.usage_header))
                       if rate_limit.window_seconds > 0
                       else TokenBucket(rate_limit.requests_per_second, rate_limit.burst))
            self._limiters[key] = limiter
        return limiter

    def adopt(self, shared: str, key: str) -> None:
        """Limiters kept under ``key`` (a connection's id, while it was being
        created and its account unknown) move to ``shared``, unless ``shared``
        has its own: the calls that tested it count for its account. Moved,
        not shared: the connection may later name another account."""
        if shared in self._limiters:  # (made with its first context: the main limiter always is)
            return
        for limiter_key in [k for k in self._limiters if k == key or k.startswith(f"{key}|")]:
            self._limiters[shared + limiter_key[len(key):]] = self._limiters.pop(limiter_key)

    def concurrency(self, key: str, calls: int) -> asyncio.Semaphore | None:
        """The bound on calls under way at once for ``key`` (None: no bound)."""
        if calls <= 0:
            return None
        return self._semaphores.setdefault(key, asyncio.Semaphore(calls))

    def endpoint_limiters(self, key: str, limits: dict[str, RateLimit]) -> dict[str, Limiter]:
        """One bucket per declared endpoint limit, for connection ``key``."""
        return {suffix: self.limiter(f"{key}|{suffix}", limit) for suffix, limit in limits.items()}  # type: ignore[misc]

    async def discard(self, key: str) -> None:
        for limiter_key in [k for k in self._limiters if k == key or k.startswith(f"{key}|")]:
            del self._limiters[limiter_key]
        self._semaphores.pop(key, None)
        client = self._clients.pop(key, None)
        if client is not None:
            await client.aclose()

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        self._limiters.clear()
        self._semaphores.clear()
        for client in clients.values():
            await client.aclose()
