"""A 3-node NATS cluster with JetStream on loopback ports, started by a test: nodes can be stopped and restarted."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import nats

from tidesync.testing import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsCluster:
    """``nodes`` nats-server processes in one cluster (``cluster_name`` tscluster), each with its own store."""

    def __init__(self, tmp: Path, nodes: int = 3) -> None:
        self.tmp = tmp
        self.client_ports = [free_port() for _ in range(nodes)]
        self.route_ports = [free_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (what `cluster: {nats: ...}` takes)."""
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    def start(self) -> None:
        for i in range(len(self.procs)):
            self.start_node(i)
        wait_until(self._jetstream_ready, timeout=60, interval=0.5, message="the NATS cluster's JetStream")

    def start_node(self, i: int) -> None:
        routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.route_ports) if j != i)
        store = self.tmp / f"nats{i}"
        store.mkdir(exist_ok=True)
        log = (self.tmp / f"nats{i}.log").open("ab")
        self.procs[i] = subprocess.Popen(
            [
                "nats-server",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.client_ports[i]),
                "-n",
                f"node{i}",
                "-js",
                "-sd",
                str(store),
                "--cluster_name",
                "tscluster",
                "--cluster",
                f"nats://127.0.0.1:{self.route_ports[i]}",
                "--routes",
                routes,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop_node(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        self.procs[i] = None

    def stop(self) -> None:
        for i in range(len(self.procs)):
            self.stop_node(i)

    def _jetstream_ready(self) -> bool:
        async def check() -> bool:
            nc = await nats.connect(servers=self.urls.split(","), connect_timeout=2, allow_reconnect=False)
            try:
                await nc.jetstream().account_info()  # answers once the JetStream meta leader is elected
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        try:
            return asyncio.run(check())
        except Exception:
            return False
