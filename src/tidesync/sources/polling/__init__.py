"""Polling sources: read changes by asking, for systems without a change log or reliable webhooks.

- :mod:`.source` — SQL tables (Postgres, MariaDB, SQLite through SQLAlchemy Core),
  incremental by (cursor, key), with look-back, soft deletes and hard-delete key scans.
- :mod:`.config` — its configuration (pydantic only: validating a config imports no driver).
- :mod:`.dialect` — URLs, engines, reflection and error translation, shared with reconciliation.
- :mod:`.horizon` — the commit horizon (oldest open transaction) that keeps late commits from being missed.
"""
