"""File spreadsheets (``type: csv``, ``type: xlsx``) as sources and sinks.

- :mod:`.types`: cell values to row values (dates, numbers, booleans, text, empty as None), per-cell errors.
- :mod:`.read`: a file to a :class:`.table.Table` (csv with dialect sniffing; xlsx through python-calamine).
- :mod:`.table`: the table model shared by both formats, and typed records by key.
- :mod:`.diff`: two snapshots by key to inserts, updates (exact ``changed``) and deletes.
- :mod:`.source` / :mod:`.sink`: the connectors; :mod:`.watch` waits for a file to change and settle.
"""
