"""Pagination that stops early: next_cursor is dropped after the second page."""

import hub_example as example
from hub import hookimpl
from hub_example import (create_record, delete_record, describe_error, entity_schemas, get_record,  # noqa: F401
                         provider_info, request_auth, test_connection, update_record, verify_webhook)


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    after, _, number = (cursor or "").partition("@")
    page = await example.list_records(ctx, entity, after or None, page_size, since)
    number = int(number or 1)
    page.next_cursor = f"{page.next_cursor}@{number + 1}" if page.next_cursor and number < 2 else None
    return page
