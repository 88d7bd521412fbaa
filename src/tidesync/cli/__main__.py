"""``python -m tidesync.cli``: the same as the ``tidesync`` command."""

from tidesync.cli import main

main()
