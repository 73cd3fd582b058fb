"""Findings of a review of the changes of 2026-11-28: each test showed a
finding, and failed on the code as reviewed."""

from __future__ import annotations

import httpx

import hub_salesforce
from hub.http import read_json


def test_a_composite_subrequest_answer_holding_nan_reads_as_null_as_a_direct_query_does():
    """A direct query's answer holding the non-JSON constant NaN reads as
    null (``read_json``). The composite query's subrequest body is now parsed
    by ``_subrequest_answer`` without that rule and rebuilt with
    ``httpx.Response(json=...)``, whose encoder refuses NaN: a ValueError
    escapes ``ctx.http.request`` (a 500 internal_error), where the same
    records by a direct query list fine."""
    records = b'{"totalSize":1,"done":true,"records":[{"Id":"001000000000001AAA","Score__c":NaN}]}'
    direct = httpx.Response(200, content=records, request=httpx.Request("GET", "https://x/query"))
    assert read_json(direct)["records"][0]["Score__c"] is None
    outer = httpx.Response(200, request=httpx.Request("POST", "https://x/composite"), content=(
        b'{"compositeResponse":[{"httpStatusCode":200,"referenceId":"%s","httpHeaders":{},"body":%s}]}'
        % (hub_salesforce.QUERY_REFERENCE.encode(), records)))
    inner = hub_salesforce._subrequest_answer(outer)
    assert read_json(inner)["records"][0]["Score__c"] is None
