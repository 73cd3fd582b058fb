"""get_record expands a field list_records leaves out: sync would take every
push of a note for a change made at the provider."""

import hub_example as example
from hub import hookimpl
from hub_example import (create_record, delete_record, describe_error, entity_schemas, list_records,  # noqa: F401
                         provider_info, request_auth, test_connection, update_record, verify_webhook)


@hookimpl
async def get_record(ctx, entity, record_id):
    record = await example.get_record(ctx, entity, record_id)
    return {**record, "author": {"name": "expanded"}} if entity == "notes" else record
