"""A provider whose pages cannot be sized (Xero's 100, Salesforce's batches of
200 at least): every page holds 7 records, whatever page_size asks."""

import dataclasses

import hub_example
from hub import hookimpl
from hub.types import Page
from hub_example import (create_record, delete_record, describe_error, get_record,  # noqa: F401
                         provider_info, request_auth, test_connection, update_record, verify_webhook)

CALLS: list[dict] = []


@hookimpl
def entity_schemas():
    return [dataclasses.replace(schema, fixed_page_size=7) for schema in hub_example.entity_schemas()]


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since, filters):
    CALLS.append({"cursor": cursor, "page_size": page_size, "since": since, "filters": dict(filters)})
    params = {"limit": 7} | ({"after": cursor} if cursor else {})
    if since:
        params["updated_since"] = since.isoformat()
    body = await ctx.http.json("GET", ctx.url(path=f"/{entity}"), params=params)
    return Page(records=body["data"], next_cursor=body.get("next"), deleted_ids=[f"gone-{cursor}"])
