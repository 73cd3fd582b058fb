"""An entity used with no schema: webhook events name the entity "note",
which entity_schemas does not declare (it declares "notes")."""

import dataclasses

import hub_example as example
from hub import hookimpl
from hub_example import (create_record, delete_record, describe_error, entity_schemas, get_record,  # noqa: F401
                         list_records, provider_info, request_auth, test_connection, update_record)


@hookimpl
def verify_webhook(ctx, request):
    return [dataclasses.replace(event, entity="note") for event in example.verify_webhook(ctx, request)]
