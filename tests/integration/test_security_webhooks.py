"""Attacks on the webhook intake of a real ``tidesync serve``: replays, odd signed timestamps, huge integer ids.

- A captured GitHub body sent again under a new ``X-GitHub-Delivery`` (which no
  signature covers) is a duplicate, and once its id is forgotten, an older body
  replayed after a newer one is dropped as stale (ordering by ``updated_at``).
- A generic HMAC source's ``max_age`` keeps an old (validly signed) body out.
- Signed timestamps that are not 1 to 15 ASCII digits (``²``, Arabic-Indic
  digits, a space, a sign, thousands of digits) are a 4xx in every scheme,
  even when the signature over them is right: never a 5xx.
- Two 30-digit ids that differ only past the 17th digit land as two rows,
  each exact; a key that is a float (``1.5``, ``12.0``, ``1e30``) is
  acknowledged and dead-lettered (error class ``transform``, the mapping's
  reason), never written, and the source keeps going.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.integration.security_support import CONFIG, Served, new_secrets, served
from tidesync.config import load_config_text
from tidesync.errors import ConfigError
from tidesync.sources.webhook.signatures import sign_github, sign_hmac, sign_standard, standard_key
from tidesync.testing import wait_until

JSON = {"content-type": "application/json"}

# The default pipelines, plus a GitHub source that forgets delivered ids at once (so a replay
# after the de-duplication window is quick to stage), HubSpot, and a generic HMAC source with max_age.
EXTRA = """\
  - name: ghfast
    source: {{type: webhook, provider: github, name: ghfast, secrets: ["{github}"], dedup_retention: 0.001}}
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
  - name: hubspot
    source: {{type: webhook, provider: hubspot, name: hubspot, secrets: ["{hubspot}"]}}
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
  - name: aged
    source:
      type: webhook
      provider: generic
      name: aged
      secrets: ["{hmac}"]
      max_age: 600
      signature: {{scheme: hmac-sha256, header: X-Signature, prefix: "sha256="}}
      mapping: {{event_id: id, entity: aged, key: [id], timestamp: ts, timestamp_unit: s}}
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
"""
SERVE = CONFIG + EXTRA


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-webhooks")


@pytest.fixture(scope="module")
def server(tmp: Path) -> Any:
    """One server for the module: each test uses its own sources, keys or tables."""
    with served(tmp, SERVE, {**new_secrets(), "hubspot": "hs-" + secrets.token_hex(16)}) as s:
        yield s


def journaled(tmp: Path, source: str) -> int:
    with sqlite3.connect(f"file:{tmp}/state.db?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM journal WHERE source = ?", (source,)).fetchone()[0])


def table_rows(tmp: Path, part: str, columns: str, where: str = "1 = 1") -> list[tuple[Any, ...]]:
    """Rows of the destination table whose name contains ``part`` (none while it does not exist)."""
    try:
        with sqlite3.connect(f"file:{tmp}/dst.db?mode=ro", uri=True) as db:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            found = [n for n in names if part in n]
            return db.execute(f'SELECT {columns} FROM "{found[0]}" WHERE {where}').fetchall() if found else []
    except sqlite3.OperationalError:  # the file or table is being created
        return []


def stale_count(server: Served, source: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=server.auth, timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'tidesync_webhook_stale_events_total{{source="{source}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def github_post(server: Served, body: bytes, delivery: str, source: str = "github") -> httpx.Response:
    headers = {**JSON, "x-github-event": "issues", "x-github-delivery": delivery}
    headers["x-hub-signature-256"] = sign_github(body, server.secrets["github"])
    return httpx.post(f"{server.url}/webhooks/{source}", content=body, headers=headers, timeout=10)


def issue(title: str, updated_at: str, number: int) -> bytes:
    # "repo" holds the key's first value, so the destination finds it in every update's row
    obj = {"repo": "acme/app", "number": number, "title": title, "updated_at": updated_at}
    return msgspec.json.encode({"action": "edited", "issue": obj, "repository": {"full_name": "acme/app"}})


def test_a_github_body_replayed_under_a_new_delivery_id_is_a_duplicate(server: Served, tmp: Path) -> None:
    v1 = issue("v1", "2024-05-01T12:00:00Z", 7)
    first = github_post(server, v1, "d-1")
    assert first.status_code == 200 and first.json()["accepted"] == 1
    # the same signed body under a fresh delivery id (no signature covers it): a duplicate
    for n in range(3):
        replay = github_post(server, v1, f"d-attacker-{n}")
        assert replay.status_code == 200 and replay.json() == {"accepted": 0, "duplicates": 1, "ignored": 0}
    assert journaled(tmp, "github") == 1
    wait_until(lambda: table_rows(tmp, "issue", "title", "number = 7") == [("v1",)], timeout=10, message="applied")


def test_an_older_github_body_replayed_after_its_id_is_forgotten_is_dropped_as_stale(server: Served, tmp: Path) -> None:
    v1, v2 = issue("v1", "2024-05-01T12:00:00Z", 8), issue("v2", "2024-05-01T12:05:00Z", 8)
    assert github_post(server, v1, "f-1", "ghfast").json()["accepted"] == 1
    wait_until(lambda: table_rows(tmp, "issue", "title", "number = 8") == [("v1",)], timeout=10, message="v1")
    assert github_post(server, v2, "f-2", "ghfast").json()["accepted"] == 1
    wait_until(lambda: table_rows(tmp, "issue", "title", "number = 8") == [("v2",)], timeout=10, message="v2")
    # this source forgets ids at once (dedup_retention), so the old body is journaled again; ordering
    # on updated_at drops it as stale, and the destination keeps v2
    wait_until(lambda: journaled(tmp, "ghfast") == 0, timeout=10, message="ids forgotten")
    late = github_post(server, v1, "f-attacker", "ghfast")
    assert late.status_code == 200 and late.json()["accepted"] == 1
    wait_until(lambda: stale_count(server, "ghfast") >= 1, timeout=10, message="the replayed v1 dropped as stale")
    assert table_rows(tmp, "issue", "title", "number = 8") == [("v2",)]


def test_an_unsigned_id_header_on_an_hmac_source_is_refused_at_config_load() -> None:
    text = (
        "pipelines:\n  - name: p\n    source:\n      type: webhook\n      provider: generic\n      secrets: s\n"
        "      signature: {scheme: hmac-sha256, header: X-Sig}\n"
        "      mapping: {event_id_header: X-Request-Id, entity: e, key: [id]}\n    sink: {type: null}\n"
    )
    with pytest.raises(ConfigError, match=r"not covered by the hmac-sha256 signature.*event_id: <path"):
        load_config_text(text)


def hmac_post(server: Served, source: str, doc: dict[str, Any]) -> httpx.Response:
    body = json.dumps(doc).encode()  # Python's json, as many senders write it: integers of any size
    headers = {**JSON, "x-signature": sign_hmac(body, server.secrets["hmac"], "hex", "sha256=")}
    return httpx.post(f"{server.url}/webhooks/{source}", content=body, headers=headers, timeout=10)


def test_max_age_keeps_an_old_signed_body_out_with_a_200(server: Served, tmp: Path) -> None:
    now = int(time.time())
    old = hmac_post(server, "aged", {"id": "a-1", "ts": now - 3600})
    assert old.status_code == 200 and old.json() == {"accepted": 0, "duplicates": 0, "ignored": 0, "too_old": 1}
    assert hmac_post(server, "aged", {"id": "a-2", "ts": now}).json()["accepted"] == 1
    assert journaled(tmp, "aged") == 1
    wait_until(lambda: table_rows(tmp, "aged", "id") == [("a-2",)], timeout=10, message="the fresh one applied")


# --- odd signed timestamps ------------------------------------------------------------------------

# As sent on the wire: header values are bytes, which the server reads as latin-1.
ODD = [b"\xb2", "١٢٣".encode(), b"\xb9\xb2\xb3", b" 123", b"+123", b"-1", b"1_7", b"9" * 16, b"9" * 5000]


def odd_requests(server: Served, ts: bytes) -> list[tuple[str, bytes, list[tuple[bytes, bytes]]]]:
    """(route, body, headers) per scheme, each signed correctly over the odd timestamp as the server sees it."""
    seen = ts.decode("latin-1").encode()  # what the server's verifier puts into the MAC
    body = b'{"id":"evt_1","object":"event","type":"customer.updated","data":{"object":{"id":"cus_1"}}}'
    json_ct = [(b"content-type", b"application/json")]
    out = []
    mac = hmac.new(server.secrets["stripe"].encode(), seen + b"." + body, hashlib.sha256).hexdigest().encode()
    out.append(("stripe", body, [*json_ct, (b"stripe-signature", b"t=" + ts + b",v1=" + mac)]))
    key = standard_key(server.secrets["standard"])
    sw = base64.b64encode(hmac.new(key, b"m-1." + seen + b"." + body, hashlib.sha256).digest())
    out.append(
        (
            "standard",
            body,
            [*json_ct, (b"webhook-id", b"m-1"), (b"webhook-timestamp", ts), (b"webhook-signature", b"v1," + sw)],
        )
    )
    hs_body = b'[{"eventId":1,"subscriptionType":"contact.creation","objectId":5,"occurredAt":1}]'
    uri = f"{server.url}/webhooks/hubspot".encode()
    hs = hmac.new(server.secrets["hubspot"].encode(), b"POST" + uri + hs_body + seen, hashlib.sha256).digest()
    hs_headers = [(b"x-hubspot-signature-v3", base64.b64encode(hs)), (b"x-hubspot-request-timestamp", ts)]
    out.append(("hubspot", hs_body, [*json_ct, *hs_headers]))
    return out


def raw_post(server: Served, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """POST written by hand (an HTTP client refuses some of these header values): the status code."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"host: " + f"{host}:{port}".encode(), b"connection: close"]
    head += [name + b": " + value for name, value in headers]
    head.append(b"content-length: " + str(len(body)).encode())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize("ts", ODD, ids=lambda t: repr(t[:8]))
def test_an_odd_signed_timestamp_is_a_4xx_in_every_scheme(server: Served, ts: bytes) -> None:
    for route, body, headers in odd_requests(server, ts):
        status = raw_post(server, f"/webhooks/{route}", headers, body)
        assert 400 <= status < 500, (route, ts[:20], status)
    assert "Traceback" not in server.output()


def test_a_right_timestamp_still_passes_every_scheme(server: Served) -> None:
    # the same requests with a current timestamp are accepted: the 4xx above is the timestamp's syntax
    with server.client() as client:
        for route, body, headers in odd_requests(server, str(int(time.time())).encode()):
            if route == "hubspot":  # HubSpot's timestamp is in milliseconds
                headers = odd_requests(server, str(int(time.time() * 1000)).encode())[2][2]
            response = client.post(f"/webhooks/{route}", content=body, headers=headers)
            assert response.status_code == 200, (route, response.text)


# --- integer ids beyond 64 bits ---------------------------------------------------------------------


def test_thirty_digit_ids_stay_exact_and_distinct_in_the_destination(server: Served, tmp: Path) -> None:
    a, b = 123456789012345678901234567890, 123456789012345678901234567891  # equal as floats
    now = int(time.time())
    for n in (a, b):
        response = hmac_post(server, "hmac", {"id": n, "ts": now})
        assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
    rows = wait_until(
        lambda: (r := table_rows(tmp, "orders", "id")) and len(r) == 2 and r,
        timeout=10,
        message="two rows",
    )
    assert sorted(str(r[0]) for r in rows) == [str(a), str(b)]


def standard_post(server: Served, msg_id: str, body: bytes) -> httpx.Response:
    now = int(time.time())
    headers = {**JSON, "webhook-id": msg_id, "webhook-timestamp": str(now)}
    headers["webhook-signature"] = sign_standard(msg_id, now, body, [server.secrets["standard"]])
    return httpx.post(f"{server.url}/webhooks/standard", content=body, headers=headers, timeout=10)


def dead_letters(server: Served, pipeline: str) -> dict[str, dict[str, Any]]:
    """The pipeline's dead letters by the first value of their key."""
    answer = httpx.get(f"{server.url}/api/dlq", params={"pipeline": pipeline}, headers=server.auth, timeout=10)
    assert answer.status_code == 200, answer.text
    return {str(e["key"][0]): e for e in answer.json()}


def test_a_float_key_is_dead_lettered_and_the_source_keeps_going(server: Served, tmp: Path) -> None:
    # The "standard" source keys its events by the body's id; the event id is the signed webhook-id header.
    tag = secrets.token_hex(4)
    floats = {f"float-{tag}-{n}": body for n, body in enumerate([b'{"id": 1.5}', b'{"id": 12.0}', b'{"id": 1e30}'])}
    for msg_id, body in floats.items():
        response = standard_post(server, msg_id, body)
        assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
    good = standard_post(server, f"int-{tag}", b'{"id": %d}' % (4242 + int(tag, 16)))
    assert good.status_code == 200 and good.json()["accepted"] == 1, good.text
    wait_until(
        lambda: table_rows(tmp, "events", "id", f"id = {4242 + int(tag, 16)}"), timeout=10, message="the int key"
    )
    letters = wait_until(
        lambda: (found := dead_letters(server, "standard")) and set(floats) <= set(found) and found,
        timeout=10,
        message="the float keys dead-lettered",
    )
    for msg_id in floats:
        letter = letters[msg_id]
        assert letter["error_class"] == "transform", letter
        assert letter["error"].startswith("webhook mapping: key value at id is a number with a fraction or exponent")
        assert letter["entity"] == "webhook.standard"
    ids = {str(r[0]) for r in table_rows(tmp, "events", "id")}
    assert not ids & {"1.5", "12", "12.0", "1e+30", "1e30", "1E+30"}  # none reached the destination
    assert "Traceback" not in server.output()
