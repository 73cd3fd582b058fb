"""The hub's logic, independent of HTTP: connections, OAuth, records, webhooks."""
