"""A real ``tidesync serve`` in a subprocess, to attack over HTTP: its URL, token, secrets, log and RSS.

The default config serves four webhook sources (Stripe, GitHub, a generic
HMAC one and a generic Standard Webhooks one) into SQLite, plus the admin
API behind a token. Every secret is random per run, so a test can grep
everything the run printed for each of them (:attr:`Served.secrets`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tidesync.testing import wait_until

CONFIG = """\
state: sqlite:///{tmp}/state.db
api:
  listen: 127.0.0.1:0
  token: ${{file:{tmp}/token.txt}}
pipelines:
  - name: stripe
    source: {{type: webhook, provider: stripe, name: stripe, secrets: ["{stripe}"]}}
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
  - name: github
    source: {{type: webhook, provider: github, name: github, secrets: ["{github}"]}}
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
  - name: hmac
    source:
      type: webhook
      provider: generic
      name: hmac
      secrets: ["{hmac}"]
      signature: {{scheme: hmac-sha256, header: X-Signature, prefix: "sha256="}}
      mapping: {{event_id: id, entity: orders, key: [id], timestamp: ts, timestamp_unit: s}}
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
  - name: standard
    source:
      type: webhook
      provider: generic
      name: standard
      secrets: ["{standard}"]
      signature: {{scheme: standard-webhooks}}
      mapping: {{event_id_header: webhook-id, entity: events, key: [id], default_op: insert}}
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
"""


def new_secrets() -> dict[str, str]:
    """Fresh secrets for the default config: admin token, Stripe, GitHub, generic HMAC, Standard Webhooks."""
    return {
        "token": "tok-" + secrets.token_hex(16),
        "stripe": "whsec_" + secrets.token_hex(16),
        "github": "gh-" + secrets.token_hex(16),
        "hmac": "hm-" + secrets.token_hex(16),
        "standard": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
    }


@dataclass
class Served:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def rss(self) -> int:
        """The server's resident memory, bytes."""
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def served(tmp: Path, config: str | None = None, values: dict[str, str] | None = None) -> Iterator[Served]:
    """Start ``tidesync serve`` on ``config`` (the default: :data:`CONFIG`, formatted with ``tmp`` and
    ``values`` or fresh :func:`new_secrets`); yield it once the API listens; stop it with SIGTERM."""
    values = values or new_secrets()
    (tmp / "token.txt").write_text(values["token"] + "\n")
    text = (config or CONFIG).format(tmp=tmp, **values)
    path = tmp / "tidesync.yaml"
    path.write_text(text)
    log = tmp / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "serve", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        found = wait_until(
            lambda: proc.poll() is not None or re.search(r"API listening on (http://\S+)", log.read_text()),
            timeout=60,
            message="tidesync serve listening",
        )
        if proc.poll() is not None:
            raise AssertionError(f"tidesync serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        assert isinstance(found, re.Match)
        yield Served(found.group(1), values["token"], proc, log, values)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
