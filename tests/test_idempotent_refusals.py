"""A create refused, sent again with the client's idempotency key (its cause
mended), reaches the provider under another key: a provider that dedupes
creates by key keeps the outcome of any request it started, a refusal too
(Stripe: "Stripe saves the resulting status code and body of the first
request made for any given idempotency key, regardless of whether it succeeds
or fails"), and would refuse the corrected create as the key's reuse, or
replay the refusal. Here the plugin raises the refusal itself, with no HTTP
status of the provider's (read from an answer, or before sending)."""

from __future__ import annotations

from hub.types import EntityField, EntitySchema, ProviderInfo, ValidationFailed
from tests.conftest import API, connected_plugin, module_plugin

INFO = ProviderInfo(name="keyed", label="Keyed", category="test", auth_type="api_key", urls={},
                    credential_fields=(EntityField("api_key", "API key", required=True),),
                    idempotent_creates=True)


class KeyedProvider:
    """A provider that, like Stripe, keeps the outcome of every keyed create
    that started executing, a refusal too: the same key again replays it,
    with other data it is refused."""

    def __init__(self):
        self.outcomes: dict[str, tuple[dict, dict | ValidationFailed]] = {}
        self.made: list[dict] = []

    def create_record(self, ctx, entity, data, idempotency_key):
        if idempotency_key in self.outcomes:
            sent, outcome = self.outcomes[idempotency_key]
            if sent != data:
                raise ValidationFailed("Keys for idempotent requests can only be used with the same parameters "
                                       "they were first used with", code="idempotency_key_reused")
            if isinstance(outcome, ValidationFailed):
                raise outcome
            return outcome
        if data.get("product") != "prod_real":
            outcome: dict | ValidationFailed = ValidationFailed(f"No such product: {data.get('product')!r}",
                                                                code="validation_error")
        else:
            outcome = {"id": f"price_{len(self.made) + 1}", **data}
            self.made.append(outcome)
        self.outcomes[idempotency_key] = (dict(data), outcome)
        if isinstance(outcome, ValidationFailed):
            raise outcome
        return outcome


def test_a_create_the_provider_refused_can_be_made_again_with_the_same_key(settings):
    provider = KeyedProvider()

    def create_record(ctx, entity, data, idempotency_key):
        return provider.create_record(ctx, entity, data, idempotency_key)
    plugin = module_plugin("keyed_plugin", INFO, [EntitySchema("prices", "Prices", supports_create=True)],
                           create_record=create_record)
    with connected_plugin(settings, plugin, "keyed") as (client, auth, connection_id):
        url = f"{API}/connections/{connection_id}/entities/prices/records"

        refused = client.post(url, json={"data": {"product": "prod_typo"}, "idempotency_key": "price-1"},
                              headers=auth)
        assert refused.status_code == 422, refused.text  # refused: nothing made, the hub frees the key

        fixed = client.post(url, json={"data": {"product": "prod_real"}, "idempotency_key": "price-1"},
                            headers=auth)
        assert fixed.status_code == 201, fixed.text
        assert [made["product"] for made in provider.made] == ["prod_real"]
