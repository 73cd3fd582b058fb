"""A plugin that sends the page size asked for as it is, beyond the
provider's maximum (the example's fake takes 100 at most)."""

from hub import hookimpl
from hub.types import Page
from hub_example import (create_record, delete_record, describe_error, entity_schemas, get_record,  # noqa: F401
                         provider_info, request_auth, test_connection, update_record, verify_webhook)


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    params = {"limit": page_size} | ({"after": cursor} if cursor else {})
    if since:
        params["updated_since"] = since.isoformat()
    body = await ctx.http.json("GET", ctx.url(path=f"/{entity}"), params=params)
    return Page(records=body["data"], next_cursor=body.get("next"))
