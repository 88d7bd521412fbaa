"""Two-way sync: two endpoints kept in step field by field, conflicts settled by rules, no echo loops.

Modules, from pure to I/O:

- ``record``: what is kept per record (shadow, both sides' images, keys, tombstones, intents);
- ``rules``: the conflict rules (lww with a clock-skew bound, prefer, non_null, max, min, sum, union, manual);
- ``decisions``: record state + one side's change -> what to write (pure; property-tested);
- ``echo``: the ledger that recognises the sync's own writes when they come back (a counter's echo whose
  write's outcome a crash hid moves the shadow by what that write brought there: the written value minus
  the value it replaced, as the side's change stream showed it; never the other side's equal value);
- ``outcome``: the outcome of the writes applied to the record state (pure);
- ``mapping``: side rows <-> canonical records (field mapping, per-direction transforms, keys, record ids);
- ``endpoint`` / ``sql`` / ``memory``: conditional writes (SQLAlchemy Core for Postgres, MariaDB, SQLite;
  in-memory tables and change feeds for tests); a csv/xlsx file side's endpoint is
  ``tidesync.sheets.endpoint.SheetEndpoint`` (read, compare and replace the file per call);
- ``saas_endpoint``: the endpoint and entity of a side whose source is an app's API (HubSpot, Stripe);
- ``writes``: decisions -> endpoint ops -> results;
- ``bookkeeping`` / ``store_layout`` / ``resolve``: review queue, history, rule overrides, resolutions
  (staged for the commit / their state-store keys and entries / applying a person's resolution);
- ``conflicts``: the review queue as people see it (``ConflictQueue``: pending, history, resolution
  requests), what the CLI, the admin API and the health readings use;
- ``processor``: one batch -> decisions -> writes -> one state-store commit;
- ``pairing``: initial pairing of populated tables and its dry run;
- ``runner`` / ``build`` / ``config``: running it from a ``syncs:`` config (its commands are
  ``tidesync.cli.sync``).

Design decisions (the why is in each module's docstring):

- Canonical records use A's field names and A's representation; B converts
  with its transforms. Both sides are compared with the shadow symmetrically.
- Every field write is conditional on the value the sync last saw there, so
  a concurrent edit is never overwritten; the shadow moves only when a write
  landed, and the side that changed under us reports its own change.
- Echoes are recognised by replication origin (Postgres) and by a ledger of
  announced writes committed before they are made (every side), so they are
  known even after a crash; recognising them also keeps stale changes, older
  than a write, from undoing it.
- Record state, ID map, review queue, history and both sides' positions
  commit in one state-store transaction; sources hear about positions after.
- Postgres writes need ``pg_replication_origin_create``,
  ``pg_replication_origin_session_setup`` and ``pg_replication_origin_oid``:
  superuser, or EXECUTE granted on them to the sync's user.
"""
