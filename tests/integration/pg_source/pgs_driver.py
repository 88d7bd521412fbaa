"""A minimal engine for the crash test: read the Postgres source, append events to a file (the sink),
checkpoint in the state store, commit to the source. Killed with SIGKILL at any moment, restarted.

Usage: python pgs_driver.py DSN STATE_URL OUT_FILE PIPELINE WORK_DIR STOP_FILE
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tidesync.protocols import Context
from tidesync.sources.postgres import PostgresSource, PostgresSourceConfig
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges


async def main(dsn: str, state_url: str, out: str, pipeline: str, work_dir: str, stop_file: str) -> None:
    store = open_state_store(state_url)
    await store.open()
    after = await store.load_checkpoint(pipeline)
    config = PostgresSourceConfig(
        dsn=dsn, tables=["t"], work_dir=work_dir, progress=False, snapshot_chunk_size=200, heartbeat_interval=0
    )
    source = PostgresSource(config)
    await source.open(Context(pipeline=pipeline, name="source", state=store), tuple(after) if after else None)
    idle = 0
    with open(out, "a", buffering=1) as fh:
        fh.write(json.dumps({"start": after}) + "\n")
        while True:
            batch = await source.read(300, 0.2)
            for e in batch.events:
                fh.write(json.dumps({"pos": e.position, "op": e.op, "key": e.key, "after": e.after}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # "written to the sink" before the checkpoint moves
            if batch.position is not None:
                await store.commit(pipeline, StateChanges(checkpoint=batch.position))
                await source.commit(batch.position)
            idle = idle + 1 if not batch.events else 0
            if idle >= 5 and Path(stop_file).exists():
                break
    await source.close()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
