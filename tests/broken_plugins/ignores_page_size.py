"""Pagination that ignores the page size the hub asks for."""

import hub_example as example
from hub import hookimpl
from hub_example import (create_record, delete_record, describe_error, entity_schemas, get_record,  # noqa: F401
                         provider_info, request_auth, test_connection, update_record, verify_webhook)


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    return await example.list_records(ctx, entity, cursor, 100, since)
