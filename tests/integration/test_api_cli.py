"""`tidesync serve`, `run --api` and `top` from the command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.api_harness import SHOP, dst_rows, make_shop, src_insert
from tidesync.testing import wait_until


def tidesync(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidesync.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_serve_and_run_api_need_a_token(tmp_path: Path) -> None:
    make_shop(tmp_path)
    config = tmp_path / "tidesync.yaml"
    config.write_text(SHOP.format(tmp=tmp_path).replace("  token: ${file:" + str(tmp_path) + "/token.txt}\n", ""))
    for args in (["serve", str(config)], ["run", "--api", str(config)]):
        result = tidesync(*args)
        assert result.returncode == 2, result.stderr
        assert "needs a bearer token: set api.token" in result.stderr


def test_run_with_api_serves_the_admin_api_and_top_shows_it(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    config = tmp_path / "tidesync.yaml"
    config.write_text(SHOP.format(tmp=tmp_path))
    log = tmp_path / "run.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "run", "--api", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        url = wait_until(lambda: re.search(r"API listening on (http://\S+)", log.read_text()), timeout=60).group(1)
        auth = {"authorization": f"Bearer {token}"}
        wait_until(lambda: httpx.get(f"{url}/api/pipelines", headers=auth).json()[0]["state"] == "running", timeout=30)
        src_insert(tmp_path, [(1, 5, "a"), (2, -1, "b")])
        wait_until(lambda: 1 in dst_rows(tmp_path), timeout=30)
        wait_until(lambda: httpx.get(f"{url}/api/dlq", headers=auth).json(), timeout=30)
        [p] = httpx.get(f"{url}/api/pipelines", headers=auth).json()
        assert (p["name"], p["state"], p["dlq_depth"]) == ("shop", "degraded", 1)  # its DLQ grew lately
        # top reads the running server when the config names where it listens
        port = url.rsplit(":", 1)[1]
        config.write_text(SHOP.format(tmp=tmp_path).replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        live = tidesync("top", str(config), "--once")
        assert live.returncode == 0, live.stderr
        assert f"live from http://127.0.0.1:{port}" in live.stdout and "degraded" in live.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    offline = tidesync("top", str(config), "--once")
    assert offline.returncode == 0, offline.stderr
    assert "from the state store" in offline.stdout and "stopped" in offline.stdout
    status = tidesync("status", str(config))  # the rich table is still there
    assert status.returncode == 0 and "tidesync pipelines" in status.stdout
    assert token not in live.stdout + offline.stdout + log.read_text()
