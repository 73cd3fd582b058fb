"""Rate limits: list 5,000 Shopify products and 5,000 Stripe customers through
the hub's REST API from fakes that enforce the providers' limits, and print
the achieved request rate as a fraction of each limit (target: at least 0.9),
and the 429s the fakes had to send (target: none). Then two tenants of a
provider limited as Xero is (per tenant a minute window, per app another,
both ten times faster here: tests/quota_provider.py) listing at once: the
achieved rate as a fraction of the app's window, which binds them together.

Pages are kept small so that the run lasts well beyond each provider's burst:
the figure is the steady rate once the fake's bucket is full, which is what a
long sync sees. Shopify: standard plan, bucket 40 leaking 2/s. Stripe: test
mode, 25 requests/s.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

from fastapi.testclient import TestClient  # noqa: E402

import _common  # noqa: F401,E402  (puts the repository on sys.path)
from hub.api.main import create_app
from hub.config import Settings
from hub.plugins import PluginRegistry
from hub.services.connections import upsert_from_credentials
from hub.services.orgs import create_organization
from hub.testing import serve
from hub.types import Credentials

RECORDS = int(os.environ.get("BENCH_RECORDS", "5000"))
API = "/api/v1/integrations"


class Recorder:
    """Wraps a fake's limiter: when each allowed request was admitted, and when
    the bucket was first full (the burst spent)."""

    def __init__(self, limiter):
        self.limiter = limiter
        self.original = limiter.hit
        self.admitted: list[float] = []
        self.full_at: float | None = None
        self.capacity = 0
        limiter.hit = self.hit

    def hit(self):
        decision = self.original()
        now = time.monotonic()
        if decision.allowed:
            self.admitted.append(now)
            self.capacity = max(self.capacity, int(decision.limit))
            if self.full_at is None and decision.used >= decision.limit - 1:
                self.full_at = now
        return decision

    def steady_rate(self) -> float:
        # Where the requests came slower than the bucket leaked, it never filled: the steady
        # part is then what follows the burst (the bucket's capacity of requests).
        burst_spent = self.admitted[min(self.capacity, len(self.admitted) - 1)] if self.admitted else 0.0
        start = self.full_at if self.full_at is not None else burst_spent
        after = [t for t in self.admitted if t >= start]
        return (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else 0.0


def list_all(client: TestClient, headers: dict, connection_id: str, entity: str, limit: int) -> list[str]:
    ids, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"{API}/connections/{connection_id}/entities/{entity}/records", params=params,
                              headers=headers)
        response.raise_for_status()
        body = response.json()
        ids += [str(r["id"]) for r in body["records"]]
        cursor = body["next_cursor"]
        if not cursor:
            return ids


def hub_client(provider_module, name: str, data_dir: str) -> tuple[TestClient, dict]:
    registry = PluginRegistry()
    registry.register(provider_module, name)
    app = create_app(Settings(data_dir=data_dir, secret_key="bench", run_scheduler=False), registry)
    client = TestClient(app)
    client.__enter__()
    with app.state.hub.session() as session:
        org, key = create_organization(session, "bench")
    return client, {"Authorization": f"Bearer {key}", "org": org.id}


def bench_stripe() -> tuple[float, float, int, int]:
    import hub_stripe
    from hub_stripe import testing as fake

    app = fake.create_app(rate=25, validate=True)
    fake.seed_customers(app, RECORDS)
    recorder = Recorder(app.state.limiter)
    with serve(app) as url:
        os.environ["HUB_STRIPE_ORIGIN"] = url
        client, auth = hub_client(hub_stripe, "stripe", tempfile.mkdtemp())
        auth.pop("org")
        created = client.post(f"{API}/connections", json={"provider": "stripe",
                                                          "credentials": {"api_key": fake.API_KEY}}, headers=auth)
        created.raise_for_status()
        started = time.monotonic()
        ids = list_all(client, auth, created.json()["connection"]["id"], "customers", limit=10)
        elapsed = time.monotonic() - started
        client.__exit__(None, None, None)
    assert len(ids) == len(set(ids)) == RECORDS, (len(ids), len(set(ids)))
    return recorder.steady_rate() / 25, elapsed, app.state.rate_limited, len(recorder.admitted)


def bench_shopify() -> tuple[float, float, int, int]:
    import hub_shopify
    from hub_shopify import testing as fake

    app = fake.create_app(capacity=40, leak_per_second=2.0)
    fake.seed_products(app, RECORDS)
    token = fake.issue_token(app)
    recorder = Recorder(app.state.bucket)
    with serve(app) as url:
        os.environ.update({"HUB_SHOPIFY_ORIGIN": url, "HUB_SHOPIFY_CLIENT_ID": fake.CLIENT_ID,
                           "HUB_SHOPIFY_CLIENT_SECRET": fake.CLIENT_SECRET})
        client, auth = hub_client(hub_shopify, "shopify", tempfile.mkdtemp())
        org = auth.pop("org")
        hub = client.app.state.hub
        connection = upsert_from_credentials(
            hub, org, hub.provider("shopify"),
            Credentials(secrets={"access_token": token}, config={"shop": fake.SHOP}, webhook_key=fake.SHOP))
        started = time.monotonic()
        ids = list_all(client, auth, connection.id, "products", limit=50)
        elapsed = time.monotonic() - started
        client.__exit__(None, None, None)
    assert len(ids) == len(set(ids)) == RECORDS, (len(ids), len(set(ids)))
    return recorder.steady_rate() / 2.0, elapsed, app.state.throttled, len(recorder.admitted)


def bench_windows() -> tuple[float, float, int, int]:
    import threading

    from tests import quota_provider as quota

    # Xero's 60 a minute per tenant, and an app window the two tenants share, ten times faster.
    window = 6.0
    quota.MINUTE, quota.DAY, quota.APP_MINUTE = (60, window), (10**6, 86400.0), (90, window)
    quota.PAGES = 10**6  # (listed page by page: every record API call is one provider call)
    calls_each = 300
    app = quota.create_app(day=quota.DAY)
    state = app.state.quota
    with serve(app) as url:
        os.environ["HUB_QUOTA_ORIGIN"] = url
        client, auth = hub_client(quota.build_plugin(quota.DAY), "quota", tempfile.mkdtemp())
        auth.pop("org")
        connections = []
        for tenant in ("tenant-a", "tenant-b"):
            created = client.post(f"{API}/connections", json={"provider": "quota", "credentials": {
                "api_key": tenant}}, headers=auth if not connections else other_org(client))
            created.raise_for_status()
            connections.append((created.request.headers["Authorization"], created.json()["connection"]["id"]))
        time.sleep(window)  # (the connection tests out of every window)

        def pull(authorization: str, connection_id: str) -> None:
            cursor = None
            for _ in range(calls_each):
                params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
                response = client.get(f"{API}/connections/{connection_id}/entities/contacts/records",
                                      params=params, headers={"Authorization": authorization})
                response.raise_for_status()
                cursor = response.json()["next_cursor"]

        first = len(state.calls)
        started = time.monotonic()
        threads = [threading.Thread(target=pull, args=pair) for pair in connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        client.__exit__(None, None, None)
    admitted = sorted(at for at, _, status in state.calls[first:] if status == 200)
    # The calls of each whole window from the first call, against the app window's 90.
    windows = int((admitted[-1] - admitted[0]) // window)
    counts = [sum(1 for t in admitted if admitted[0] + k * window <= t < admitted[0] + (k + 1) * window)
              for k in range(windows)]
    fraction = sum(counts) / (len(counts) * quota.APP_MINUTE[0]) if counts else 0.0
    return fraction, elapsed, len(state.refused()), len(admitted)


def other_org(client: TestClient) -> dict:
    with client.app.state.hub.session() as session:
        _, key = create_organization(session, "bench-2")
    return {"Authorization": f"Bearer {key}"}


def main() -> None:
    for name, run, limit in (("Stripe customers", bench_stripe, "25 req/s"),
                             ("Shopify products", bench_shopify, "bucket 40, 2 req/s")):
        fraction, elapsed, refused, requests = run()
        print(f"{name}: {RECORDS} listed in {elapsed:.1f} s with {requests} requests; "
              f"steady rate {fraction:.3f} of the limit ({limit}) (target >= 0.9); 429s sent: {refused}")
    fraction, elapsed, refused, requests = bench_windows()
    print(f"Two tenants of Xero-like windows (60 per 6 s each, 90 per 6 s for the app) listing at once: "
          f"{requests} calls in {elapsed:.1f} s; calls per whole window {fraction:.3f} of the app's 90 "
          f"(target >= 0.9); 429s sent: {refused}")


if __name__ == "__main__":
    main()
