"""Reconciliation: compare a pipeline's source and destination tables, report the drift, repair it.

- :mod:`.target` — which tables, how their columns line up through the transforms, hashing mode
- :mod:`.canonical` — one text form per value, so differently typed databases compare exactly
- :mod:`.side` — counted, rate-limited reads of one side (range hashes in the database, rows, keys)
- :mod:`.compare` — the walk: chunk hashes first, descend only into chunks that differ
- :mod:`.settle` — re-read each suspect by key, report it, and repair it through the delivery path
- :mod:`.run` — one run of a pipeline (``tidesync reconcile``); :mod:`.schedule` — runs on a timer
- :mod:`.config` — ``reconcile: {every, repair, chunk_size, rate}`` in a pipeline's config
"""
