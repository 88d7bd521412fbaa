"""The state store: it opens (creating its tables if new) and takes a write (a probe key, deleted again)."""

from __future__ import annotations

import time

from tidesync.checks import Check, Endpoint

PROBE_NAMESPACE = "validate-check"


async def check_state(endpoint: Endpoint) -> list[Check]:
    from tidesync.state import open_state_store

    url = str(endpoint.config)
    store = open_state_store(url)
    try:
        await store.open()
    except Exception as exc:
        return [
            endpoint.check(
                "reachable",
                "fail",
                f"cannot open {_kind(url)} state store: {exc}",
                "fix `state:` (the URL), or start the database it names",
            )
        ]
    try:
        key = f"probe-{time.time_ns()}"
        try:
            await store.kv_put(PROBE_NAMESPACE, key, {"at": time.time()})
            await store.kv_delete(PROBE_NAMESPACE, key)
        except Exception as exc:
            return [
                endpoint.ok("reachable", f"{_kind(url)} state store opens"),
                endpoint.check(
                    "writable",
                    "fail",
                    f"cannot write: {exc}",
                    "give the user write access to the state store (file permissions, or GRANT on its tables)",
                ),
            ]
    finally:
        await store.close()
    return [endpoint.ok("reachable", f"{_kind(url)} state store opens"), endpoint.ok("writable", "a write succeeds")]


def _kind(url: str) -> str:
    return "Postgres" if url.startswith(("postgres://", "postgresql://")) else "SQLite"
