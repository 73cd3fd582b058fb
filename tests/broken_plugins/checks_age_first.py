"""Judges a delivery's age before its signature: a stale delivery is answered
``webhook_stale`` (passed through by the intake) even when forged, which tells
its sender that the connection exists."""

import hmac
import time

import hub_example as example
from hub import hookimpl
from hub.types import AuthFailed, WebhookRejected, signed_unix_time
from hub_example import (create_record, delete_record, describe_error, entity_schemas, get_record,  # noqa: F401
                         list_records, provider_info, request_auth, test_connection, update_record)


@hookimpl
def verify_webhook(ctx, request):
    secret = ctx.credentials.get("webhook_secret")
    if not secret:
        raise AuthFailed("connection has no webhook secret")
    header = request.header("X-Example-Signature") or ""
    timestamp = signed_unix_time(header.partition(",")[0])
    if abs(time.time() - timestamp) > ctx.provider.webhook_tolerance_seconds:
        raise WebhookRejected("delivery is too old", code="webhook_stale")
    if not hmac.compare_digest(example.sign(secret, timestamp, request.body), header):
        raise WebhookRejected("signature does not match")
    return example.verify_webhook(ctx=ctx, request=request)
