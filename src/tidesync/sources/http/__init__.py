"""API polling sources: SaaS APIs read by asking, with pacing, retries and rotating credentials.

- :mod:`.client` — one HTTP client: token bucket, 429/Retry-After, backoff, 401/403, error translation.
- :mod:`.delivery` — the client's errors as delivery errors, for the sinks that write through it.
- :mod:`.ratelimit` — the token bucket (injected clock) and Retry-After parsing.
- :mod:`.auth` — bearer keys and OAuth2 refresh, read from secrets on every use (rotation without restart).
- :mod:`.stripe_api` — Stripe list objects and the Events API (shared with the webhook source's backfill).
- :mod:`.stripe` — ``type: stripe``: the Events API as a change feed, list endpoints for a snapshot.
- :mod:`.hubspot_search` — search windows under the 10,000-result ceiling, ties paged by id (pure).
- :mod:`.hubspot` — ``type: hubspot``: CRM objects by ``hs_lastmodifieddate``, diffed field by field.
- :mod:`.config` — their configuration (pydantic only).
"""
