"""Decoding provider responses in the core's client: whatever JSON a provider
sends is read exactly, and what is not JSON is one clear error."""

from __future__ import annotations

import httpx
import pytest

from hub.http import error_for_response, read_json
from hub.types import ErrorDescription, NotFound, ProviderError, RateLimited, StaleVersion, ValidationFailed


def response(content: bytes, content_type: str = "application/json", status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=content, headers={"content-type": content_type})


def test_utf8_json_and_its_member():
    body = '{"name": "Zoë Ünal", "lines": [1, 2.5, null], "ok": true}'.encode()
    assert read_json(response(body)) == {"name": "Zoë Ünal", "lines": [1, 2.5, None], "ok": True}
    assert read_json(response(body), key="name") == "Zoë Ünal"
    assert read_json(response(b"", status=204)) == {}
    with pytest.raises(ProviderError, match="empty body"):  # a 200 without its body is no empty record
        read_json(response(b""))


def test_big_integers_and_other_encodings_are_read_exactly_and_nan_as_null():
    # Integers past 64 bits (exact, not rounded), a body in UTF-16; NaN and Infinity (not JSON,
    # and no value the API can write out) as null.
    assert read_json(response(b'{"id": 123456789012345678901234567890}')) == {"id": 123456789012345678901234567890}
    assert read_json(response(b'{"rate": NaN, "limit": [Infinity, -Infinity, 1.5]}')) == {
        "rate": None, "limit": [None, None, 1.5]}
    assert read_json(response('{"name": "Zoë"}'.encode("utf-16"), "application/json; charset=utf-16")) == \
        {"name": "Zoë"}


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b'{"unfinished": ', b"\xff\xfe\xfa"])
def test_a_body_that_is_not_json_is_a_provider_error(body):
    with pytest.raises(ProviderError, match="HTTP 200 with a body that is not JSON"):
        read_json(response(body))


def test_json_nested_past_the_parsers_depth_is_a_provider_error():
    with pytest.raises(ProviderError, match="nested too deep"):
        read_json(response(b"[" * 100_000 + b"]" * 100_000))


def test_a_missing_member_is_a_provider_error():
    with pytest.raises(ProviderError, match="without 'product'"):
        read_json(response(b'{"products": []}'), key="product")


@pytest.mark.parametrize(("status", "kind"), [(422, ValidationFailed), (404, NotFound), (429, RateLimited),
                                             (412, StaleVersion)])
def test_an_error_description_keeps_the_class_of_the_status_and_carries_fields_details_and_code(status, kind):
    described = ErrorDescription("email is taken", fields=["properties.email"], details={"category": "CONFLICT"},
                                 code="duplicate_email")
    error = error_for_response(httpx.Response(status), described)
    assert type(error) is kind and error.message == "email is taken" and error.provider_status == status
    assert (error.fields, error.details, error.code) == (("properties.email",), {"category": "CONFLICT"},
                                                         "duplicate_email")
    assert error_for_response(httpx.Response(status), ErrorDescription("plain")).code == kind.code


def test_an_answer_with_lone_surrogates_reads_mended():
    """JSON allows a lone "\\ud83d" (a string cut in the middle of an emoji), UTF-8
    cannot hold it: a record with one could be neither stored nor answered. A
    pair written as two escapes is one character and stays."""
    body = b'{"data": [{"id": "1", "title": "cut \\ud83d", "\\udc00": ["\\ud83d\\ude00", 1]}]}'
    response = httpx.Response(200, content=body, request=httpx.Request("GET", "http://provider.test/notes"))
    assert read_json(response, "data") == [{"id": "1", "title": "cut \ufffd", "\ufffd": ["\U0001f600", 1]}]
    plain = httpx.Response(200, content=b'{"data": [{"id": "1"}]}', request=response.request)
    assert read_json(plain, "data") == [{"id": "1"}]
