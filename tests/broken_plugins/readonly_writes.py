"""The schema says tags are read-only, but create_record ignores the entity
and writes anyway (a note, whatever was asked for)."""

from hub import hookimpl
from hub_example import (delete_record, describe_error, entity_schemas, get_record, list_records,  # noqa: F401
                         provider_info, request_auth, test_connection, update_record, verify_webhook)


@hookimpl
async def create_record(ctx, entity, data, idempotency_key):
    return await ctx.http.json("POST", ctx.url(path="/notes"), json={"title": "x", **data},
                               headers={"Idempotency-Key": idempotency_key})
