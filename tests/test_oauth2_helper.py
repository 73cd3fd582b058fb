"""hub.oauth2: the standard token exchange plugins call instead of writing
it again: the grant and the client's credentials sent as RFC 6749 says, the
answer read without assuming what providers leave out."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta, timezone

import pytest

from hub import oauth2
from hub.types import ProviderError


class Context:
    """What token_request uses of a ProviderContext, noting what it sends."""

    def __init__(self, answer):
        self.answer, self.sent = answer, []

    def setting(self, name):
        return {"client_id": "app id", "client_secret": "s3cr:t"}[name]

    def url(self, name):
        assert name == "token"
        return "https://provider.test/oauth/token"

    @property
    def http(self):
        return self

    async def json(self, method, url, **kwargs):
        self.sent.append((method, url, kwargs))
        return self.answer


def test_a_code_is_exchanged_with_the_client_credentials_in_the_form_or_as_basic_auth():
    ctx = Context({"access_token": "at", "refresh_token": "rt", "expires_in": 1800})
    credentials = asyncio.run(oauth2.token_request(ctx, "authorization_code", code="c", redirect_uri="https://r",
                                                   code_verifier=None))
    method, url, sent = ctx.sent[0]
    assert (method, url) == ("POST", "https://provider.test/oauth/token")
    assert sent["data"] == {"grant_type": "authorization_code", "code": "c", "redirect_uri": "https://r",
                            "client_id": "app id", "client_secret": "s3cr:t"}  # no code_verifier: none was given
    assert sent["authenticate"] is False  # not the connection's request_auth: no old token beside the client's
    assert credentials.secrets == {"access_token": "at", "refresh_token": "rt"}
    assert timedelta(minutes=29) < credentials.expires_at - datetime.now(timezone.utc) <= timedelta(minutes=30)
    asyncio.run(oauth2.token_request(ctx, "refresh_token", refresh_token="rt", client_auth="basic"))
    sent = ctx.sent[1][2]
    assert sent["data"] == {"grant_type": "refresh_token", "refresh_token": "rt"}
    assert sent["headers"]["Authorization"] == "Basic " + base64.b64encode(b"app%20id:s3cr%3At").decode()


def test_an_answer_without_a_new_refresh_token_or_an_expiry_keeps_what_the_provider_leaves_out():
    credentials = oauth2.token_credentials({"access_token": "at2", "token_type": "bearer"})
    assert credentials.secrets == {"access_token": "at2"} and credentials.expires_at is None  # stored one kept
    for text in ("3600", "3600.0", 3600.0):
        assert oauth2.token_credentials({"access_token": "at", "expires_in": text}).expires_at is not None
    for odd in (0, -5, True, "soon", None, "nan", "inf", float("nan")):
        assert oauth2.token_credentials({"access_token": "at", "expires_in": odd}).expires_at is None


@pytest.mark.parametrize("answer", [{}, {"access_token": ""}, {"access_token": 5}, ["at"], None])
def test_an_answer_without_an_access_token_is_the_providers_error(answer):
    with pytest.raises(ProviderError, match="without an access_token"):
        oauth2.token_credentials(answer)
