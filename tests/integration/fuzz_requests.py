"""Random raw HTTP requests against ``tidesync serve``, and a client that sends them byte for byte.

Shared by ``tests/integration/test_security_fuzz.py`` (5,000 requests) and
``bench/fuzz.py`` (100,000). :func:`generate` draws one request from a seeded
:class:`random.Random` over the harness's default config
(:data:`tests.integration.security_support.CONFIG`): real, near-miss, admin,
webhook, garbage, very long, percent-encoded and traversal paths; signature
headers random, garbled, or right in form but wrong, timestamps with odd digits
(``²``); huge headers, bad content types, random bearer tokens and sometimes the
real one; empty, random, deep, wide, non-UTF-8, NaN or 30-digit bodies; and
sometimes a body correctly signed with the source's secret, so the fuzz also
reaches past the signature into splitting, journaling and mapping.

Each request says what would make a 2xx legitimate (:meth:`FuzzRequest.may_succeed`):
the real token on an admin route, a public page, or a correct signature for the
webhook source the server resolves the path to. Any other 2xx is a forgery.

Requests are written raw (:func:`send`) so nothing on the way normalises the
path, re-encodes a header or fixes a length: the server sees exactly the bytes drawn.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

SOURCES = ("stripe", "github", "hmac", "standard")
PIPELINES = (*SOURCES, "nope", "STRIPE", "", "a" * 250, "..", "%2e%2e", "stripe%00", "x y")
PUBLIC = frozenset({"/healthz", "/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css"})
METHODS = ("GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "get", "FOO", "P\x01ST")
ODD_NUMBERS = (
    "²",
    "¹²³",
    "³",
    "-1",
    "+1",
    "1e3",
    "0x10",
    "\uff11\uff12",
    " 12",
    "12 ",
    "",
    "0" * 40,
    "9" * 30,
    "1.5",
    "NaN",
)
ID_VALUES = ("1", "0", "-1", "9" * 30, str(2**63), str(2**64), "abc", "1.5", "%00", "NaN", "1e308", "²")


@dataclass(frozen=True, slots=True)
class FuzzRequest:
    """One raw request. ``signed_for`` names the source whose secret correctly signed it (or None);
    ``authorized`` says it carries the real admin token as its first ``Authorization`` header."""

    method: str
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    signed_for: str | None
    authorized: bool
    kind: str  # what was drawn, for reports: "webhook:stripe:signed", "admin", "garbage", ...

    def path(self) -> str:
        """The path as the server routes it: before ``?``/``#``, percent-decoded."""
        raw = self.target.split(b"?", 1)[0].split(b"#", 1)[0].decode("latin-1")
        return unquote(raw)

    def may_succeed(self) -> bool:
        """Whether a 2xx is legitimate: anything else answered 2xx is a forgery."""
        path = self.path()
        if path.startswith("/webhooks/"):
            return self.method == "POST" and self.signed_for is not None and path == f"/webhooks/{self.signed_for}"
        if path in PUBLIC and self.method in ("GET", "HEAD"):
            return True
        return self.authorized

    def describe(self, limit: int = 600) -> str:
        heads = b"\r\n".join(k + b": " + v[:200] for k, v in self.headers)
        head = f"{self.kind} {self.method} {self.target[:300]!r}\n{heads.decode('latin-1')}"
        return f"{head}\nbody[{len(self.body)}]={self.body[:300]!r}"[:limit]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: connection closed without an answer; -1: no answer in time
    head: bytes
    body: bytes
    elapsed: float


# --- bodies ------------------------------------------------------------------------------------


def _deep(rng: random.Random) -> bytes:
    n = rng.choice((65, 100, 1000, 20_000, 200_000))
    if rng.random() < 0.5:
        return b"[" * n + b"]" * n
    return b'{"a":' * n + b"1" + b"}" * n


def _wide(rng: random.Random) -> bytes:
    n = rng.choice((100, 10_001, 50_000))
    if rng.random() < 0.5:
        return b"[" + b",".join(b"1" for _ in range(n)) + b"]"
    return json.dumps({f"k{i}": i for i in range(n)}).encode()


def _scalar(rng: random.Random) -> object:
    return rng.choice((None, True, 0, -1, 2**63, 10**29 + 7, 1.5e308, "", "é", "\u0000", "x" * 300, [], {}))


def _event(rng: random.Random, source: str, event_id: str) -> dict[str, object]:
    """A plausible event for ``source``, with fields swapped for odd values now and then."""
    now = int(time.time())
    if source == "stripe":
        obj: dict[str, object] = {"id": f"cus_{rng.randrange(50)}", "object": "customer", "email": "a@x"}
        doc: dict[str, object] = {"id": event_id, "object": "event", "type": rng.choice(
            ("customer.updated", "customer.created", "customer.deleted", "x")), "created": now,
            "data": {"object": obj, "previous_attributes": {"email": "b@x"}}}  # fmt: skip
    elif source == "github":
        doc = {"action": rng.choice(("opened", "edited", "closed", "deleted", "?")),
               "issue": {"number": rng.randrange(50), "title": "t", "updated_at": "2024-01-01T00:00:00Z"},
               "repository": {"full_name": "a/b"}, "changes": {"title": {"from": "s"}}}  # fmt: skip
    else:
        doc = {"id": event_id, "ts": now, "total": "1.50", "status": "paid"}
    for _ in range(rng.choice((0, 0, 1, 3))):
        target = rng.choice([doc] + [v for v in doc.values() if isinstance(v, dict)])
        if target:
            field = rng.choice(list(target))
            target[field] = rng.choice((10**29 + 1, -(10**29), 2**63, 1e308, "²", None, [], {"x": {}}, "", "x" * 500))
    return doc


def _body(rng: random.Random, source: str, event_id: str) -> bytes:
    r = rng.random()
    if r < 0.45:
        return json.dumps(_event(rng, source, event_id)).encode()
    if r < 0.5:  # 30-digit ids and NaN / Infinity (Python's json writes them; strict JSON writers refuse them)
        doc = _event(rng, source, event_id)
        doc[rng.choice(("id", "created", "ts"))] = rng.choice((10**29 + 3, float("nan"), float("inf"), -(10**30)))
        return json.dumps(doc).encode()
    if r < 0.55:
        return b""
    if r < 0.62:
        return rng.randbytes(rng.choice((1, 16, 300, 4096)))
    if r < 0.67:
        return _deep(rng)
    if r < 0.71:
        return _wide(rng)
    if r < 0.75:
        return b'{"id": "\xff\xfe", "ts": 1, "x": "\xc3\x28"}'  # invalid UTF-8 inside valid JSON syntax
    if r < 0.8:
        return json.dumps(_scalar(rng)).encode()
    if r < 0.85:
        return b'{"id": ' + b"9" * rng.choice((30, 400, 5000)) + b', "ts": 1e999, "n": NaN, "i": -Infinity}'
    if r < 0.9:
        return rng.choice((b"{", b"[1,", b'{"a":1}{"b":2}', b"\x00", b"\xef\xbb\xbf{}", b"null", b'"x"'))
    if r < 0.93:
        return b'{"pad": "' + b"x" * rng.choice((1024 * 1024 - 20, 1024 * 1024 + 1, 2 * 1024 * 1024)) + b'"}'
    return json.dumps({"items": [_scalar(rng) for _ in range(rng.randrange(1, 20))]}).encode()


# --- signatures: computed as the server verifies them, over the exact bytes sent ---------------


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def _sign(rng: random.Random, source: str, body: bytes, secret: str, event_id: str) -> list[tuple[bytes, bytes]]:
    """Headers that sign ``body`` correctly for ``source`` (the timestamp may be odd, stale or in the future)."""
    now = int(time.time())
    ts = rng.choice((str(now),) * 6 + (str(now - 10_000), str(now + 10_000), *ODD_NUMBERS[:3]))
    if source == "stripe":
        sig = _mac(secret.encode(), ts.encode() + b"." + body).hex()
        return [(b"stripe-signature", f"t={ts},v1={sig}".encode("latin-1"))]
    if source == "github":
        event = rng.choice(("issues", "issues", "pull_request", "ping", "push", ""))
        return [
            (b"x-hub-signature-256", b"sha256=" + _mac(secret.encode(), body).hex().encode()),
            (b"x-github-event", event.encode()),
            (b"x-github-delivery", event_id.encode("latin-1")),
        ]
    if source == "hmac":
        return [(b"x-signature", b"sha256=" + _mac(secret.encode(), body).hex().encode())]
    msg = event_id.encode("latin-1") + b"." + ts.encode() + b"." + body
    sig = base64.b64encode(_mac(_standard_key(secret), msg))
    return [
        (b"webhook-id", event_id.encode("latin-1")),
        (b"webhook-timestamp", ts.encode("latin-1")),
        (b"webhook-signature", b"v1," + sig),
    ]


def _forged(rng: random.Random, body: bytes, secrets: dict[str, str], source: str | None) -> list[tuple[bytes, bytes]]:
    """Signature headers that are missing, garbled, or right in form but wrong (never with ``source``'s secret)."""
    now = str(int(time.time())).encode()
    wrong_hex = rng.randbytes(32).hex().encode()
    wrong_b64 = base64.b64encode(rng.randbytes(32))
    other = rng.choice([v for k, v in secrets.items() if k != source]).encode()  # another's secret, or the token
    out = rng.choice((
        [(b"stripe-signature", b"t=" + now + b",v1=" + wrong_hex)],
        [(b"stripe-signature", b"t=" + rng.choice(ODD_NUMBERS).encode("utf-8") + b",v1=" + wrong_hex + b",v1=")],
        [(b"stripe-signature", b"t=" + now + b",v1=" + _mac(other, now + b"." + body).hex().encode())],
        [(b"stripe-signature", rng.choice((b"", b",", b"t=,v1=", b"v1=" + wrong_hex, b"t=\xb2,v1=\xb2")))],
        [(b"x-hub-signature-256", b"sha256=" + rng.choice((wrong_hex, _mac(other, body).hex().encode(), b"")))],
        [(b"x-hub-signature-256", rng.choice((b"sha1=" + wrong_hex, b"SHA256=" + wrong_hex, b"\xff" * 70)))],
        [(b"x-signature", b"sha256=" + rng.choice((wrong_hex, wrong_hex.upper(), _mac(other, body).hex().encode())))],
        [(b"x-signature", rng.choice((wrong_hex, b"sha256=", b"sha256=" + b"0" * 64, b"sha256=\x00")))],
        [(b"webhook-id", b"msg_1"), (b"webhook-timestamp", now), (b"webhook-signature", b"v1," + wrong_b64)],
        [(b"webhook-id", b"m"), (b"webhook-timestamp", rng.choice(ODD_NUMBERS).encode()), (b"webhook-signature",
          rng.choice((b"v1,", b"v1a," + wrong_b64, b"v2," + wrong_b64, b"v1," + wrong_b64 + b" v1,x")))],
        [],
    ))  # fmt: skip
    return out


# --- paths, headers --------------------------------------------------------------------------------


def _admin_path(rng: random.Random) -> str:
    name = rng.choice(PIPELINES)
    num = rng.choice(ID_VALUES)
    return rng.choice((
        "/api/pipelines", f"/api/pipelines/{name}", f"/api/pipelines/{name}/pause", f"/api/pipelines/{name}/resume",
        f"/api/pipelines/{name}/reconcile", f"/api/pipelines/{name}/snapshot", "/api/jobs", f"/api/jobs/{num}",
        "/api/syncs", "/api/dlq", f"/api/dlq/{num}", "/api/dlq/replay", "/api/dlq/discard", "/api/conflicts",
        f"/api/conflicts/{name}:{num}", f"/api/conflicts/{name}:{num}/resolve", "/api/overview", "/api/latency",
        "/api/alerts", "/api/errors", "/api/stream", "/metrics", "/openapi.json", "/docs", "/api",
    ))  # fmt: skip


def _query(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return ""
    pairs = [
        f"{rng.choice(('limit', 'seconds', 'interval', 'after', 'pipeline', 'entity', 'contains', 'sync', 'x'))}="
        f"{rng.choice((*ID_VALUES, '0.2', '10', 'inf', '-inf', 'x' * 600, '%ff', ''))}"
        for _ in range(rng.randrange(1, 4))
    ]
    return "?" + "&".join(pairs)


def _path(rng: random.Random) -> tuple[str, str | None]:
    """A target and the webhook source it means (if any)."""
    r = rng.random()
    source = rng.choice(SOURCES)
    if r < 0.45:
        return f"/webhooks/{source}", source
    if r < 0.7:
        return _admin_path(rng) + _query(rng), None
    if r < 0.75:
        return rng.choice(("/healthz", "/", "/dashboard", "/dashboard/dashboard.js", "/dashboard/x")), None
    if r < 0.8:  # percent-encoded: the server decodes it, so it is still the real route
        return "/webhooks/" + "".join(f"%{ord(c):02X}" if rng.random() < 0.5 else c for c in source), source
    if r < 0.86:
        return rng.choice((
            f"/webhooks/{source.upper()}", f"/webhooks/{source}/", f"//webhooks/{source}", f"/webhooks/{source}%00",
            "/webhooks/", "/webhooks", f"/webhooks/{source}/../{source}", "/webhooks/..%2Fapi%2Fpipelines",
            "/webhooks/../api/pipelines", "/api/../api/pipelines", "/%2e%2e/%2e%2e/etc/passwd", "/api/pipelines/",
            "/API/PIPELINES", "/api//pipelines", "/api/pipelines%2F", "/healthz/", "/dashboard/../api/pipelines",
            "/dashboard/%2e%2e%2fapi%2fpipelines", "/dashboard/..%2f..%2fsecrets",
        )), None  # fmt: skip
    if r < 0.9:
        return "/" + "a" * rng.choice((1000, 8000, 70_000)) + rng.choice(("", "?q=" + "b" * 9000)), None
    if r < 0.95:
        alphabet = "abc/%.?#&=;:@!$'()*+,~-_ \t\"<>\\^`{|}\x7f\x00é"
        return "/" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 80))), None
    return rng.choice(("*", "", "webhooks/stripe", "http://evil/webhooks/stripe", "/\r\nx: y", "/%", "/%zz")), None


def _bearer(rng: random.Random, token: str) -> tuple[list[tuple[bytes, bytes]], bool]:
    r = rng.random()
    if r < 0.25:
        # The scheme is case-insensitive and the space after it may be repeated: all of these are the real token.
        return [(b"authorization", rng.choice((b"Bearer ", b"bearer ", b"BEARER  ")) + token.encode())], True
    if r < 0.5:
        return [], False
    flip = token[:-1] + ("0" if token[-1] != "0" else "1")
    value = rng.choice((
        "Bearer " + flip, "Bearer " + token[:-1], "Bearer " + token + "x", "Basic " + token,
        "Token " + token, "Bearer", "Bearer ", token, "Bearer " + "tok-" + rng.randbytes(16).hex(),
        "Bearer " + token.upper(), "Bearer " + "x" * 10_000, "Bearer \xb2", "Bearer " + token + "\x00",
    ))  # fmt: skip
    return [(b"authorization", value.encode("latin-1"))], False


_HEADER_BYTES = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))  # what a header value may hold


def _noise(rng: random.Random) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for _ in range(rng.choice((0, 0, 1, 3, 200))):
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz-") for _ in range(rng.randrange(1, 20)))
        value = bytes(rng.choice(_HEADER_BYTES) for _ in range(rng.randrange(0, 30)))
        out.append((name.encode(), value))
    if rng.random() < 0.02:  # a control byte: the HTTP parser refuses the whole request
        out.append((b"x-control", rng.choice((b"\x00", b"a\x01b", b"\x7f", b"\x1b[0m"))))
    if rng.random() < 0.03:
        out.append((b"x-huge", b"h" * rng.choice((16_000, 70_000, 300_000))))
    if rng.random() < 0.02:
        out.append((b"x-bad\x00name", b"v"))
    return out


def _content_type(rng: random.Random) -> list[tuple[bytes, bytes]]:
    if rng.random() < 0.8:
        return [(b"content-type", rng.choice((b"application/json", b"application/json; charset=utf-8")))]
    value = rng.choice((b"", b"text/plain", b"application/x+json", b"application/json\xff", b"multipart/form-data",
                        b"application/xml", b"application/json;" * 500, b"APPLICATION/JSON", b"*/*"))  # fmt: skip
    return [] if rng.random() < 0.3 else [(b"content-type", value)]


# --- one request -------------------------------------------------------------------------------------


def generate(rng: random.Random, secrets: dict[str, str], host: str) -> FuzzRequest:
    """Draw one request for a server at ``host`` (HOST:PORT) with the harness's ``secrets``."""
    target, source = _path(rng)
    webhook = source is not None
    method = "POST" if webhook and rng.random() < 0.9 else rng.choice(METHODS)
    event_id = rng.choice((f"evt_{rng.randrange(200)}", f"evt_{rng.randrange(10**9)}", "", "é²", "x" * 201))
    body = _body(rng, source or rng.choice(SOURCES), event_id) if method != "GET" or rng.random() < 0.1 else b""
    headers = [(b"host", host.encode())]
    signed_for = None
    if webhook and rng.random() < 0.45:
        assert source is not None
        headers += _sign(rng, source, body, secrets[source], event_id or "evt_0")
        signed_for = source
        kind = f"webhook:{source}:signed"
        if rng.random() < 0.1:  # signed, then tampered: a forgery
            body = body[:-1] if body and rng.random() < 0.5 else body + b" "
            signed_for = None
            kind = f"webhook:{source}:tampered"
    else:
        headers += _forged(rng, body, secrets, source)
        kind = f"webhook:{source}:forged" if webhook else "other"
    auth, authorized = _bearer(rng, secrets["token"])
    headers = auth + headers + _content_type(rng) + _noise(rng)
    if target.startswith("/api") or target.startswith("/metrics") or target.startswith("/openapi"):
        kind = "admin:token" if authorized else "admin:forged"
    framing = rng.random()
    honest = kind.endswith(("signed", "tampered"))  # a lying length or broken chunking would change what was signed
    if framing < 0.9:
        headers.append((b"content-length", str(len(body)).encode()))
    elif body and (framing < 0.95 or honest):
        headers.append((b"transfer-encoding", b"chunked"))
        broken = not honest and rng.random() < 0.3
        body = b"zz\r\n" + body if broken else b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    elif honest:
        headers.append((b"content-length", b"0"))
    else:
        headers.append((b"content-length", rng.choice((b"-1", b"abc", b"99999999999999999999", b"0", b"1e3"))))
    try:
        raw_target = target.encode("latin-1")
    except UnicodeEncodeError:
        raw_target = quote(target, safe="/?&=%").encode()
    return FuzzRequest(method, raw_target, tuple(headers), body, signed_for, authorized, kind)


def encode(req: FuzzRequest) -> bytes:
    head = req.method.encode("latin-1", "replace") + b" " + req.target + b" HTTP/1.1\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in req.headers)
    return head + b"connection: close\r\n\r\n" + req.body


async def send(host: str, port: int, req: FuzzRequest, timeout: float = 20.0, keep: int = 65536) -> Answer:
    """Send ``req`` on a new connection and read the answer until the server closes it.

    An event stream is read only up to its headers. Bytes past ``keep`` are read and dropped.
    """
    t0 = time.perf_counter()
    data = bytearray()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(encode(req))
                await writer.drain()
                while chunk := await reader.read(65536):
                    if len(data) < keep:
                        data += chunk
                    if b"\r\n\r\n" in data and b"text/event-stream" in data.split(b"\r\n\r\n", 1)[0]:
                        break
            finally:
                writer.close()
    except TimeoutError:
        return Answer(-1, bytes(data[:2000]), b"", time.perf_counter() - t0)
    except (ConnectionError, OSError):
        pass  # the server may close before reading a refused request in full; what arrived still counts
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head[9:12]) if head.startswith(b"HTTP/1.") and head[9:12].isdigit() else 0
    return Answer(status, head, body, time.perf_counter() - t0)


# --- a run -------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What a run found. ``rss_start`` is measured after the warm-up; ``rss_max`` is the largest sample since."""

    sent: int = 0
    elapsed: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[tuple[FuzzRequest, Answer]] = field(default_factory=list)
    forgeries: list[tuple[FuzzRequest, Answer]] = field(default_factory=list)
    leaks: list[tuple[FuzzRequest, Answer, str]] = field(default_factory=list)
    no_answer: list[tuple[FuzzRequest, Answer]] = field(default_factory=list)
    signed_2xx: int = 0
    rss_start: int = 0
    rss_max: int = 0

    @property
    def rss_growth(self) -> int:
        return self.rss_max - self.rss_start

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{self.sent} requests in {self.elapsed:.1f} s ({self.sent / max(self.elapsed, 1e-9):,.0f}/s); "
            f"statuses {{{codes}}}; signed and accepted {self.signed_2xx}; 5xx {len(self.server_errors)}; "
            f"forgeries {len(self.forgeries)}; leaks {len(self.leaks)}; "
            f"RSS {self.rss_start / 2**20:.1f} -> max {self.rss_max / 2**20:.1f} MiB"
        )

    def findings(self, limit: int = 5) -> str:
        """Distinct findings (one example per kind and status line), for an assertion message."""
        out: list[str] = []
        for title, items in (("5xx", self.server_errors), ("forgery", self.forgeries)):
            seen: set[tuple[str, bytes]] = set()
            for req, ans in items:
                sig = (req.kind, ans.body[:60])
                if sig not in seen and len(seen) < limit:
                    seen.add(sig)
                    out.append(f"--- {title}: {ans.status} {ans.body[:200]!r}\n{req.describe()}")
        out += [f"--- leak of {what}: {ans.status}\n{req.describe()}" for req, ans, what in self.leaks[:limit]]
        return "\n".join(out)


def server_tracebacks(log: str) -> dict[str, str]:
    """Each distinct traceback in a server log, by its last line (the exception), with its innermost frame."""
    found: dict[str, str] = {}
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in block.splitlines() if line.strip()]
        last = next((line for line in lines if not line.startswith(" ")), lines[-1] if lines else "?")
        frames = [line.strip() for line in lines if line.lstrip().startswith("File ")]
        found.setdefault(last.strip()[:300], frames[-1] if frames else "")
    return found


async def attack(
    host: str,
    port: int,
    secrets: dict[str, str],
    rng: random.Random,
    count: int,
    rss: Callable[[], int],
    *,
    concurrency: int = 8,
    warmup: int = 500,
    sample_every: int = 250,
) -> Report:
    """Send ``count`` generated requests, ``concurrency`` at a time, and judge every answer."""
    report = Report()
    needles = {name: value.encode() for name, value in secrets.items()}
    drawn = iter(range(count))
    lock = asyncio.Lock()

    async def worker() -> None:
        for n in drawn:
            req = generate(rng, secrets, f"{host}:{port}")
            ans = await send(host, port, req)
            report.sent += 1
            report.statuses[ans.status] += 1
            if ans.status >= 500:
                report.server_errors.append((req, ans))
            if 200 <= ans.status < 300:
                if not req.may_succeed():
                    report.forgeries.append((req, ans))
                elif req.signed_for is not None:
                    report.signed_2xx += 1
            if ans.status <= 0:
                report.no_answer.append((req, ans))
            for name, needle in needles.items():
                if needle in ans.head or needle in ans.body:
                    report.leaks.append((req, ans, name))
            if n + 1 == warmup or (n + 1 > warmup and (n + 1) % sample_every == 0):
                async with lock:
                    value = rss()
                    if n + 1 == warmup or not report.rss_start:
                        report.rss_start = value
                    report.rss_max = max(report.rss_max, value)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.elapsed = time.perf_counter() - t0
    final = rss()
    report.rss_start = report.rss_start or final
    report.rss_max = max(report.rss_max, final)
    return report
