"""A webhook check that accepts anything: the signature is never compared."""

import json

from hub import hookimpl
from hub.types import WebhookEvent
from hub_example import (create_record, delete_record, describe_error, entity_schemas, get_record,  # noqa: F401
                         list_records, provider_info, request_auth, test_connection, update_record)


@hookimpl
def verify_webhook(ctx, request):
    event = json.loads(request.body)
    entity, action = event["type"].split(".")
    return [WebhookEvent(dedup_key=event["id"], type=event["type"], entity=entity + "s", action=action,
                         record_id=str(event["data"]["id"]), record=event["data"])]
