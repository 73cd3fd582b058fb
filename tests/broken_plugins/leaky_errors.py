"""Errors leak as raw exceptions: the body of an error response is indexed
as if it were a page or a record (KeyError on a 404)."""

from hub import hookimpl
from hub.types import Page
from hub_example import (create_record, delete_record, describe_error, entity_schemas,  # noqa: F401
                         provider_info, request_auth, test_connection, update_record, verify_webhook)


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    params = {"limit": min(page_size, 100)} | ({"after": cursor} if cursor else {})
    if since:
        params["updated_since"] = since.isoformat()
    response = await ctx.http.get(ctx.url(path=f"/{entity}"), params=params, raise_for_status=False)
    body = response.json()
    return Page(records=body["data"], next_cursor=body.get("next"))


@hookimpl
async def get_record(ctx, entity, record_id):
    response = await ctx.http.get(ctx.url(path=f"/{entity}/{record_id}"), raise_for_status=False)
    body = response.json()
    body["id"]
    return body
