"""The fields of the plugin's entities, as Shopify's Admin REST API (2025-01) documents them.

Sources: the resource reference pages of the 2025-01 REST Admin API (Order, Product,
Product Variant, Product Image, Customer, Customer Address, Custom Collection,
Location, Inventory Level, Fulfillment), as Shopify's own generated REST clients
carry them (``Shopify/shopify-app-js``, ``rest/admin/2025-01/*.ts``: each resource's
properties, and the reference's example responses in its tests). Keys that the
reference's example responses hold but the property lists leave out
(``admin_graphql_api_id``, an order's ``contact_email``...) are declared too: Shopify
sends them. Write-only parameters (a customer's ``password``, ``metafield(s)``,
``send_email_invite``) are left out: no record holds them.

An object or array lists its sub-fields only where the reference fixes its keys; these
stay open (any path into them is taken): an order's ``payment_terms``, ``refunds``,
``discount_applications`` and ``company``, a line item's ``duties``, a fulfillment's
``receipt`` (the payment gateway's own), a product's ``options[].values`` and
``images[].variant_ids`` (lists of scalars).
"""

from __future__ import annotations

from typing import Any

from hub.types import EntityField


def F(name: str, type: str = "string", **flags: Any) -> EntityField:  # noqa: A002, N802
    return EntityField(name, type=type, **flags)


def RO(name: str, type: str = "string", **flags: Any) -> EntityField:  # noqa: A002, N802
    """A field Shopify computes: never accepted on write."""
    return EntityField(name, type=type, readonly=True, **flags)


def CO(name: str, type: str = "string", **flags: Any) -> EntityField:  # noqa: A002, N802
    """A field taken when the record is created, never changed after."""
    return EntityField(name, type=type, create_only=True, **flags)


# ---------------------------------------------------------------- shared shapes

MONEY = (F("amount", "money"), F("currency_code"))
#: A ``*_set`` field: an amount in the shop's and in the customer's (presentment) currency.
MONEY_SET = (F("shop_money", "object", fields=MONEY), F("presentment_money", "object", fields=MONEY))


def money_set(name: str, **flags: Any) -> EntityField:
    return EntityField(name, type="object", fields=MONEY_SET, **flags)


#: An order's billing or shipping address.
ORDER_ADDRESS = (
    F("address1"), F("address2"), F("city"), F("company"), F("country"),
    F("country_code", description="ISO 3166-1 alpha-2"), F("first_name"), F("last_name"),
    F("latitude", "number"), F("longitude", "number"), F("name"), F("phone"), F("province"),
    F("province_code"), F("zip"),
)

#: A customer's address (``addresses`` items and ``default_address``).
CUSTOMER_ADDRESS = (
    RO("id", "integer"), RO("customer_id", "integer"), F("first_name"), F("last_name"), F("company"),
    F("address1"), F("address2"), F("city"), F("province"), F("country"), F("zip"), F("phone"), F("name"),
    F("province_code"), F("country_code"), RO("country_name"), F("default", "boolean"),
)

EMAIL_MARKETING_CONSENT = (
    F("state", description="subscribed, not_subscribed, pending, unsubscribed, redacted or invalid"),
    F("opt_in_level", description="single_opt_in, confirmed_opt_in or unknown"),
    F("consent_updated_at", "datetime"),
)
SMS_MARKETING_CONSENT = EMAIL_MARKETING_CONSENT + (F("consent_collected_from", description="SHOPIFY or OTHER"),)

NAME_VALUE = (F("name"), F("value"))

TAX_LINE = (
    F("price", "money"), F("rate", "number"), F("title"), money_set("price_set"),
    F("channel_liable", "boolean"),
)

DISCOUNT_ALLOCATION = (
    F("amount", "money"), money_set("amount_set"), F("discount_application_index", "integer"),
)

#: An order's line item (also inside fulfillments, with ``fulfillment_line_item_id``).
LINE_ITEM = (
    F("id", "integer"), F("admin_graphql_api_id"),
    F("attributed_staffs", "array", fields=(F("id"), F("quantity", "integer"))),
    F("current_quantity", "integer"), F("fulfillable_quantity", "integer"), F("fulfillment_service"),
    F("fulfillment_status", description="null, fulfilled, partial or not_eligible"), F("gift_card", "boolean"),
    F("grams", "integer"), F("name"), F("price", "money"), money_set("price_set"),
    F("product_exists", "boolean"), F("product_id", "integer"),
    F("properties", "array", fields=NAME_VALUE), F("quantity", "integer"), F("requires_shipping", "boolean"),
    F("sku"), F("taxable", "boolean"), F("title"), F("total_discount", "money"), money_set("total_discount_set"),
    F("variant_id", "integer"), F("variant_inventory_management"), F("variant_title"), F("vendor"),
    F("tax_lines", "array", fields=TAX_LINE),
    F("duties", "array", description="duties of the item (open: their shape is not listed)"),
    F("discount_allocations", "array", fields=DISCOUNT_ALLOCATION),
)

SHIPPING_LINE = (
    F("id", "integer"), F("carrier_identifier"), F("code"), F("discounted_price", "money"),
    money_set("discounted_price_set"), F("is_removed", "boolean"), F("phone"), F("price", "money"),
    money_set("price_set"), F("requested_fulfillment_service_id"), F("source"), F("title"),
    F("tax_lines", "array", fields=TAX_LINE), F("discount_allocations", "array", fields=DISCOUNT_ALLOCATION),
)

ORIGIN_ADDRESS = (F("address1"), F("address2"), F("city"), F("country_code"), F("province_code"), F("zip"))

#: A fulfillment: the ``fulfillments`` entity, and the items of an order's ``fulfillments``.
FULFILLMENT = (
    RO("id", "integer"), RO("admin_graphql_api_id"), RO("order_id", "integer"), RO("name", description="#1001.0"),
    RO("status", description="pending, open, success, cancelled, error or failure"),
    RO("service"), RO("shipment_status"), RO("location_id", "integer"),
    RO("origin_address", "object", fields=ORIGIN_ADDRESS),
    RO("line_items", "array", fields=LINE_ITEM + (F("fulfillment_line_item_id", "integer"),)),
    F("tracking_company"), F("tracking_number"), F("tracking_numbers", "array"), F("tracking_url"),
    F("tracking_urls", "array"), RO("receipt", "object", description="the payment gateway's (open)"),
    F("notify_customer", "boolean"), RO("variant_inventory_management"),
    RO("created_at", "datetime"), RO("updated_at", "datetime"),
)

#: The customer embedded in an order (a subset of the customers entity).
ORDER_CUSTOMER = (
    F("id", "integer"), F("email"), F("created_at", "datetime"), F("updated_at", "datetime"), F("first_name"),
    F("last_name"), F("state"), F("note"), F("verified_email", "boolean"), F("multipass_identifier"),
    F("tax_exempt", "boolean"), F("phone"), F("email_marketing_consent", "object", fields=EMAIL_MARKETING_CONSENT),
    F("sms_marketing_consent", "object", fields=SMS_MARKETING_CONSENT), F("tags"), F("currency"),
    F("tax_exemptions", "array"), F("admin_graphql_api_id"), F("default_address", "object", fields=CUSTOMER_ADDRESS),
)

CLIENT_DETAILS = (
    F("accept_language"), F("browser_height", "integer"), F("browser_ip"), F("browser_width", "integer"),
    F("session_hash"), F("user_agent"),
)

IMAGE = (
    RO("id", "integer"), F("alt"), F("position", "integer"), RO("product_id", "integer"),
    RO("created_at", "datetime"), RO("updated_at", "datetime"), RO("admin_graphql_api_id"),
    RO("width", "integer"), RO("height", "integer"), F("src"), F("variant_ids", "array"),
)

PRESENTMENT_PRICE = (F("price", "object", fields=MONEY), F("compare_at_price", "object", fields=MONEY))

VARIANT = (
    RO("id", "integer"), RO("product_id", "integer"), F("title"), F("price", "money"), F("position", "integer"),
    F("inventory_policy", description="deny or continue"), F("compare_at_price", "money"),
    F("option1"), F("option2"), F("option3"), RO("created_at", "datetime"), RO("updated_at", "datetime"),
    F("taxable", "boolean"), F("barcode"), F("fulfillment_service"), F("grams", "integer"),
    F("inventory_management"), F("requires_shipping", "boolean"), F("sku"), F("weight", "number"),
    F("weight_unit", description="g, kg, oz or lb"), RO("inventory_item_id", "integer"),
    RO("inventory_quantity", "integer"), RO("old_inventory_quantity", "integer"),
    RO("presentment_prices", "array", fields=PRESENTMENT_PRICE), RO("admin_graphql_api_id"),
    F("image_id", "integer"), F("tax_code"),
)

OPTION = (RO("id", "integer"), RO("product_id", "integer"), F("name"), F("position", "integer"), F("values", "array"))

COLLECTION_IMAGE = (RO("created_at", "datetime"), F("alt"), RO("width", "integer"), RO("height", "integer"),
                    F("src"))

ID = RO("id", "integer")
CREATED = RO("created_at", "datetime")
UPDATED = RO("updated_at", "datetime")
GRAPHQL_ID = RO("admin_graphql_api_id", description="the GraphQL Admin API's id (gid://shopify/...)")

# ---------------------------------------------------------------- entities

PRODUCT_FIELDS = (
    ID, F("title", required=True), F("body_html", description="description (HTML)"), F("vendor"),
    F("product_type"), F("handle"), F("status", description="active, draft or archived"),
    F("tags", description="comma-separated"), F("variants", "array", fields=VARIANT),
    F("options", "array", fields=OPTION), F("images", "array", fields=IMAGE),
    RO("image", "object", fields=IMAGE, description="the first of images"), F("published_at", "datetime"),
    F("published_scope", description="web or global"), F("template_suffix"), GRAPHQL_ID, CREATED, UPDATED,
)

ORDER_FIELDS = (
    ID, GRAPHQL_ID, RO("name", description="#1001"), RO("number", "integer"), RO("order_number", "integer"),
    RO("token"), RO("confirmation_number"), RO("confirmed", "boolean"),
    F("email"), RO("contact_email"), F("phone"), RO("customer_locale"),
    CO("financial_status", description="pending, authorized, partially_paid, paid, partially_refunded, "
                                       "refunded or voided"),
    RO("fulfillment_status", description="null, fulfilled, partial or restocked"),
    CO("currency"), RO("presentment_currency"),
    RO("total_price", "money"), money_set("total_price_set", readonly=True),
    RO("subtotal_price", "money"), money_set("subtotal_price_set", readonly=True),
    RO("total_line_items_price", "money"), money_set("total_line_items_price_set", readonly=True),
    CO("total_tax", "money"), money_set("total_tax_set", readonly=True),
    RO("total_discounts", "money"), money_set("total_discounts_set", readonly=True),
    money_set("total_shipping_price_set", readonly=True), RO("total_outstanding", "money"),
    RO("total_tip_received", "money"), RO("total_weight", "integer", description="grams"),
    RO("current_total_price", "money"), money_set("current_total_price_set", readonly=True),
    RO("current_subtotal_price", "money"), money_set("current_subtotal_price_set", readonly=True),
    RO("current_total_tax", "money"), money_set("current_total_tax_set", readonly=True),
    RO("current_total_discounts", "money"), money_set("current_total_discounts_set", readonly=True),
    money_set("current_total_duties_set", readonly=True),
    money_set("current_total_additional_fees_set", readonly=True),
    money_set("original_total_duties_set", readonly=True),
    money_set("original_total_additional_fees_set", readonly=True),
    money_set("total_cash_rounding_payment_adjustment_set", readonly=True),
    money_set("total_cash_rounding_refund_adjustment_set", readonly=True),
    CO("taxes_included", "boolean"), RO("estimated_taxes", "boolean"), RO("duties_included", "boolean"),
    RO("tax_exempt", "boolean"),
    CO("line_items", "array", required=True, fields=LINE_ITEM),
    CO("customer", "object", fields=ORDER_CUSTOMER),
    CO("billing_address", "object", fields=ORDER_ADDRESS), F("shipping_address", "object", fields=ORDER_ADDRESS),
    CO("shipping_lines", "array", fields=SHIPPING_LINE), CO("tax_lines", "array", fields=TAX_LINE),
    CO("discount_codes", "array", fields=(F("code"), F("amount", "money"),
                                          F("type", description="fixed_amount, percentage or shipping"))),
    RO("discount_applications", "array", description="open: its keys depend on the discount's type"),
    F("note"), F("note_attributes", "array", fields=NAME_VALUE), F("tags"),
    F("buyer_accepts_marketing", "boolean"), CO("test", "boolean"),
    RO("fulfillments", "array", fields=FULFILLMENT), RO("refunds", "array", description="open"),
    RO("payment_terms", "object", description="open"), RO("payment_gateway_names", "array"),
    RO("company", "object", description="open: the B2B company and location"),
    RO("client_details", "object", fields=CLIENT_DETAILS), RO("browser_ip"),
    RO("cart_token"), RO("checkout_token"), RO("checkout_id", "integer"),
    RO("landing_site"), RO("landing_site_ref"), RO("referring_site"),
    CO("source_name", description="web, pos, shopify_draft_order, iphone, android or an app's own"),
    RO("source_identifier"), RO("source_url"), RO("reference"),
    RO("order_status_url"), RO("po_number"), RO("app_id", "integer"), RO("user_id", "integer"),
    RO("location_id", "integer"), RO("device_id", "integer"),
    RO("merchant_of_record_app_id", "integer"), RO("merchant_business_entity_id"),
    CO("processed_at", "datetime"), RO("closed_at", "datetime"), RO("cancelled_at", "datetime"),
    RO("cancel_reason", description="customer, fraud, inventory, declined, staff or other"), CREATED, UPDATED,
)

CUSTOMER_FIELDS = (
    ID, F("email"), F("first_name"), F("last_name"), F("phone"),
    RO("state", description="disabled, invited, enabled or declined"),
    RO("verified_email", "boolean"), F("tags"), F("note"), F("tax_exempt", "boolean"),
    F("tax_exemptions", "array", description="Canadian tax exemption codes"),
    RO("currency"), F("addresses", "array", fields=CUSTOMER_ADDRESS),
    RO("default_address", "object", fields=CUSTOMER_ADDRESS),
    F("email_marketing_consent", "object", fields=EMAIL_MARKETING_CONSENT),
    F("sms_marketing_consent", "object", fields=SMS_MARKETING_CONSENT),
    RO("marketing_opt_in_level", description="deprecated: email_marketing_consent.opt_in_level"),
    F("multipass_identifier"), RO("orders_count", "integer"), RO("total_spent", "money"),
    RO("last_order_id", "integer"), RO("last_order_name"), GRAPHQL_ID, CREATED, UPDATED,
)

INVENTORY_LEVEL_FIELDS = (
    RO("id", description="<inventory_item_id>:<location_id> (made by the hub: Shopify gives levels no id)"),
    RO("inventory_item_id", "integer"), RO("location_id", "integer"), RO("available", "integer"),
    GRAPHQL_ID, UPDATED,
)

COLLECTION_FIELDS = (
    ID, F("title", required=True), F("handle"), F("body_html"),
    F("published", "boolean", description="write-only: publish to the Online Store (published_at tells)"),
    F("sort_order", description="alpha-asc, alpha-desc, best-selling, created, created-desc, manual, "
                                "price-asc or price-desc"),
    F("image", "object", fields=COLLECTION_IMAGE), F("published_at", "datetime"),
    F("published_scope", description="web or global"), F("template_suffix"),
    RO("products_count", "integer", description="only when one collection is fetched"), GRAPHQL_ID, UPDATED,
)

LOCATION_FIELDS = (
    ID, RO("name"), RO("address1"), RO("address2"), RO("city"), RO("zip"), RO("province"),
    RO("province_code"), RO("country", description="its ISO 3166-1 alpha-2 code"), RO("country_code"),
    RO("country_name"), RO("localized_country_name"), RO("localized_province_name"), RO("phone"),
    RO("active", "boolean"), RO("legacy", "boolean", description="a fulfillment service's location"),
    GRAPHQL_ID, CREATED, UPDATED,
)

FULFILLMENT_FIELDS = FULFILLMENT + (
    RO("order_created_at", "datetime",
       description="when its order was created (the hub's, from the order, on the shop's fulfillments listed "
                   "without order_id): Shopify lists them as long as it lists their order"),)
