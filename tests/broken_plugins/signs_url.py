"""Not broken: deliveries are checked against the URL they were posted to
(HubSpot's v3 signs method and URI): the suite must tell the maker that URL
and give it to verify_webhook, or a correct plugin fails."""

import hub_example as example
from hub import hookimpl
from hub.types import WebhookRejected
from hub_example import (create_record, delete_record, describe_error, entity_schemas, get_record,  # noqa: F401
                         list_records, provider_info, request_auth, test_connection, update_record)


@hookimpl
def verify_webhook(ctx, request):
    if request.method != "POST" or request.header("X-Example-Url") != request.url or not request.url:
        raise WebhookRejected(f"signed for {request.header('X-Example-Url')!r}, posted to {request.url!r}")
    return example.verify_webhook(ctx=ctx, request=request)
