"""A plugin that builds its own HTTP client instead of using ctx.http."""

import httpx

from hub import hookimpl
from hub.types import Page
from hub_example import (create_record, delete_record, describe_error, entity_schemas, get_record,  # noqa: F401
                         provider_info, request_auth, test_connection, update_record, verify_webhook)


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    params = {"limit": min(page_size, 100)} | ({"after": cursor} if cursor else {})
    if since:
        params["updated_since"] = since.isoformat()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ctx.credentials['api_key']}"}) as client:
        response = await client.get(ctx.url(path=f"/{entity}"), params=params)
    body = response.json()
    return Page(records=body["data"], next_cursor=body.get("next"))
