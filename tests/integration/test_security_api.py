"""The admin API and the server's connections under attack, over HTTP against a real ``tidesync serve``.

- an unauthenticated 200 MiB POST to ``/api/dlq/replay`` (declared, chunked, or with an absurd
  ``Content-Length``) is answered 401 before its body is read; the server's RSS stays within 50 MiB;
- an authenticated body over ``api.admin_max_body_bytes`` is answered 413 (declared or chunked);
- several large unauthenticated posts at once change nothing;
- slowloris: 300 connections dribbling a request head are closed at the header deadline, while a
  normal request is served meanwhile; a fresh idle connection is closed at the same deadline;
- a slow body: 200 connections whose head is complete and whose body (declared or chunked, to a
  webhook route unsigned or to the admin API with the token) keeps coming a byte at a time, well
  inside any idle gap, are answered 408 and closed at ``api.body_timeout_seconds``; a normal
  request is served meanwhile, and a signed delivery is accepted afterwards;
- an idle keep-alive connection is closed after ``api.keep_alive_timeout_seconds``;
- a request head over ``api.max_header_bytes`` is answered 431;
- past ``api.limit_concurrency`` connections, a request is answered 503.

Bodies are sent from a generator over a raw socket (the test never holds them), and the sender
stops as soon as the server answers or drops the connection.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from tests.integration.security_support import CONFIG, Served, served
from tidesync.sources.webhook.signatures import sign_hmac
from tidesync.testing import wait_until

MiB = 1024 * 1024
RSS_SLACK = 50 * MiB
CHUNK = b"\0" * MiB
JSON_CT = {"content-type": "application/json"}


def config(**api: object) -> str:
    lines = "".join(f"  {k}: {v}\n" for k, v in api.items())
    return CONFIG.replace("api:\n", "api:\n" + lines, 1)


def body(size: int) -> Iterator[bytes]:
    """``size`` bytes in 1 MiB chunks, made as they are sent."""
    for start in range(0, size, MiB):
        yield CHUNK[: min(MiB, size - start)]


@contextlib.contextmanager
def peak_rss(server: Served) -> Iterator[list[int]]:
    """Sample the server's RSS every 10 ms while the block runs; yields [start, peak] (filled at exit)."""
    start = server.rss()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            with contextlib.suppress(Exception):
                peak[0] = max(peak[0], server.rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result: list[int] = []
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result[:] = [start, max(peak[0], server.rss())]


def connect(server: Served) -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one response (read until its Content-Length, or until the server closes)."""
    data = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            None,
        )
        while length is not None and len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        data = head + b"\r\n\r\n" + rest
    assert data.startswith(b"HTTP/1.1 "), f"no response: {data[:200]!r}"
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), rest


def post(
    server: Served,
    path: str,
    chunks: Iterable[bytes],
    *,
    length: int | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, int]:
    """POST ``chunks`` over a raw socket (chunked when ``length`` is None); stop sending once the server
    answers or drops the connection. Returns the status, the response body and how many bytes were sent."""
    sock = connect(server)
    framing = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n{framing}\r\n{extra}\r\n"
    sent = 0
    with sock:
        sock.sendall(head.encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered (or closed): stop sending
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if length is None else chunk)
                sent += len(chunk)
            else:
                if length is None:
                    sock.sendall(b"0\r\n\r\n")
        status, reply = read_response(sock)
    return status, reply, sent


def test_unauthenticated_huge_bodies_are_refused_before_they_are_read(tmp_path: Path) -> None:
    with served(tmp_path) as server:
        with peak_rss(server) as rss:
            declared = post(server, "/api/dlq/replay", body(200 * MiB), length=200 * MiB)
            chunked = post(server, "/api/dlq/replay", body(200 * MiB))
            absurd = post(server, "/api/dlq/replay", body(200 * MiB), length=10**15)
            wrong = post(server, "/api/dlq/replay", body(200 * MiB), headers={"authorization": "Bearer nope"})
        for status, reply, sent in (declared, chunked, absurd, wrong):
            assert status == 401, reply
            assert "token" in msgspec.json.decode(reply)["detail"]
            assert sent < 100 * MiB  # the server answered long before the end of the body
        start, peak = rss
        assert peak - start < RSS_SLACK, f"RSS grew {(peak - start) / MiB:.0f} MiB"
        with server.client() as client:  # the admin API still works with the token
            assert client.get("/api/pipelines", headers=server.auth).status_code == 200


def test_authenticated_oversized_bodies_are_refused_with_413(tmp_path: Path) -> None:
    with served(tmp_path, config(admin_max_body_bytes=4096)) as server:
        with peak_rss(server) as rss:
            declared = post(server, "/api/dlq/replay", body(200 * MiB), length=200 * MiB, headers=server.auth)
            chunked = post(server, "/api/dlq/replay", body(200 * MiB), headers=server.auth)
            small_chunks = post(server, "/api/dlq/replay", (b" " * 1000 for _ in range(10)), headers=server.auth)
        for status, reply, _ in (declared, chunked, small_chunks):
            assert status == 413, reply
            assert msgspec.json.decode(reply) == {"detail": "body too large"}
        start, peak = rss
        assert peak - start < RSS_SLACK, f"RSS grew {(peak - start) / MiB:.0f} MiB"
        with server.client() as client:  # a body under the limit is read and answered by the route
            reply = client.post("/api/dlq/replay", headers=server.auth, json={"ids": [1]})
            assert reply.status_code == 404, reply.text
            assert client.post("/api/dlq/replay", json={"ids": [1]}).status_code == 401
            # a public route keeps its behaviour, and the webhook routes their own (larger) limit
            assert client.get("/healthz").status_code == 200
            hook = client.post("/webhooks/hmac", content=b"{" * 8000, headers={"x-signature": "sha256=00"})
            assert hook.status_code not in (413, 401), hook.text


def test_parallel_large_posts_leave_memory_flat(tmp_path: Path) -> None:
    with served(tmp_path) as server:
        results: list[tuple[int, bytes, int]] = []

        def attack(n: int) -> None:
            auth = server.auth if n % 3 == 2 else {}  # some with the token: refused for size instead
            results.append(
                post(server, "/api/dlq/replay", body(300 * MiB), length=None if n % 2 else 300 * MiB, headers=auth)
            )

        with peak_rss(server) as rss:
            threads = [threading.Thread(target=attack, args=(n,)) for n in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert sorted(r[0] for r in results) == [401, 401, 401, 401, 413, 413]
        start, peak = rss
        assert peak - start < RSS_SLACK, f"RSS grew {(peak - start) / MiB:.0f} MiB"


def closed(sock: socket.socket) -> bool:
    """The server closed this connection (EOF or reset); never blocks."""
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        return sock.recv(4096) == b""
    except OSError:
        return True


SLOW = config(header_timeout_seconds=1, keep_alive_timeout_seconds=1, body_timeout_seconds=1)


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path, SLOW) as server:
        yield server


def test_slowloris_connections_are_closed_at_the_header_deadline(slow_server: Served) -> None:
    server = slow_server
    socks = [connect(server) for _ in range(300)]
    try:
        for sock in socks:
            sock.sendall(b"POST /api/dlq/replay HTTP/1.1\r\nhost: test\r\n")
        open_ = set(range(len(socks)))

        def dribble_until_all_closed() -> bool:
            # One more header byte on every open connection per poll: the head keeps arriving, never completes.
            for i in list(open_):
                if closed(socks[i]):
                    open_.discard(i)
                    continue
                with contextlib.suppress(OSError):
                    socks[i].send(b"x")
            return not open_

        with server.client() as client:  # meanwhile a normal request is served
            assert client.get("/api/pipelines", headers=server.auth).status_code == 200
        assert len(open_) > 250  # the attack was in place while that request was served
        wait_until(dribble_until_all_closed, timeout=5, interval=0.1, message="slowloris connections closed")
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_idle_connections_are_closed(slow_server: Served) -> None:
    server = slow_server
    fresh = connect(server)  # opened, never sends a byte
    kept = connect(server)
    with fresh, kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        assert read_response(kept)[0] == 200
        assert not closed(kept)  # keep-alive: still open right after the response
        wait_until(lambda: closed(kept), timeout=4, message="idle keep-alive connection closed")
        wait_until(lambda: closed(fresh), timeout=4, message="idle fresh connection closed")


def slow_body(server: Served, n: int) -> socket.socket:
    """A connection whose request head is complete and whose body has just begun (never finished)."""
    if n % 10 == 0:  # the admin API, with the token: its body is read by the route
        path, extra, size = "/api/dlq/replay", f"authorization: {server.auth['authorization']}\r\n", 1000
    else:  # a webhook route, unsigned: the signature can only be checked once the body is all there
        path, extra, size = "/webhooks/hmac", "x-signature: sha256=00\r\n", 100_000
    chunked = n % 2 == 1
    framing = "transfer-encoding: chunked" if chunked else f"content-length: {size}"
    sock = connect(server)
    head = f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n{framing}\r\n{extra}\r\n"
    sock.sendall(head.encode() + (b"%x\r\n" % size if chunked else b"") + b"{")
    return sock


def test_a_body_sent_slowly_is_answered_408_at_the_body_deadline(slow_server: Served) -> None:
    server = slow_server
    socks = [slow_body(server, n) for n in range(200)]
    try:
        open_ = dict(enumerate(socks))
        answers: dict[int, int] = {}
        sent = 0

        def trickle_until_all_answered() -> bool:
            # One more body byte on every open connection per poll (a gap of ~0.05 s, far inside any idle
            # limit): the body keeps arriving and would complete only after hundreds of seconds.
            nonlocal sent
            for i, sock in list(open_.items()):
                if select.select([sock], [], [], 0)[0]:
                    answers[i] = read_response(sock)[0]
                    del open_[i]
                    continue
                with contextlib.suppress(OSError):
                    sent += sock.send(b" ")
            return not open_

        started = time.monotonic()
        with server.client() as client:  # meanwhile a normal request is served
            assert client.get("/api/pipelines", headers=server.auth).status_code == 200
        wait_until(trickle_until_all_answered, timeout=8, interval=0.05, message="slow bodies answered")
        elapsed = time.monotonic() - started
        assert sorted(set(answers.values())) == [408], answers
        assert sent >= len(socks)  # the bodies kept coming while the deadline ran
        assert elapsed >= 0.5  # answered at the deadline, not refused at once
        for sock in socks:  # and each connection is closed after its 408
            wait_until(lambda sock=sock: closed(sock), timeout=2, message="connection closed after 408")
    finally:
        for sock in socks:
            sock.close()
    with server.client() as client:  # a body sent in time is read and answered as before
        assert client.get("/healthz").status_code == 200
        body = msgspec.json.encode({"id": f"in-time-{time.time_ns()}", "ts": int(time.time())})
        signature = sign_hmac(body, server.secrets["hmac"], prefix="sha256=")
        reply = client.post("/webhooks/hmac", content=body, headers={"x-signature": signature, **JSON_CT})
        assert reply.status_code == 200 and reply.json()["accepted"] == 1, reply.text


def test_a_huge_request_head_is_refused(slow_server: Served) -> None:
    sock = connect(slow_server)
    with sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: test\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for n in range(100):  # 100 x 10 KiB of headers, well past the 64 KiB default
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(b"x-pad-%d: %s\r\n" % (n, b"a" * 10240))
        assert read_response(sock)[0] == 431


def test_requests_past_the_concurrency_limit_get_503(tmp_path: Path) -> None:
    with served(tmp_path, config(limit_concurrency=5)) as server:
        idle = [connect(server) for _ in range(6)]
        try:
            with server.client() as client:
                wait_until(lambda: client.get("/healthz").status_code == 503, timeout=5, message="503")
        finally:
            for sock in idle:
                sock.close()
        with server.client() as client:
            wait_until(lambda: client.get("/healthz").status_code == 200, timeout=5, message="served again")
