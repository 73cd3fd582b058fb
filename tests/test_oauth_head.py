"""HEAD is answered as GET except on the OAuth routes, whose GETs act: a HEAD
of the callback URL (a link checker's, a mail scanner's, a prefetch) would
spend the single-use state and code, and the user's own GET fail."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hub_shopify import testing as fake
from tests.sync_support import API, shopify_app, shopify_consent  # noqa: F401  (fixture)


def test_a_head_of_the_oauth_callback_does_not_finish_the_flow(shopify_app):  # noqa: F811
    client, auth, _shop = shopify_app
    assert client.head(f"{API}/oauth/shopify/authorize", params={"shop": fake.SHOP}, headers=auth).status_code == 405
    query = shopify_consent(client, auth)
    head = client.head(f"{API}/oauth/shopify/callback", params=query, follow_redirects=False)
    assert (head.status_code, head.headers["Allow"]) == (405, "GET")
    back = client.get(f"{API}/oauth/shopify/callback", params=query, follow_redirects=False)
    assert back.status_code == 302, back.text
    result = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["location"]).query).items()}
    assert result["status"] == "connected", result
