"""Webhook signature schemes: pure functions over the raw body, the headers, the secrets and ``now``.

Every verifier works on the exact bytes received (never a re-serialised body),
compares in constant time (:func:`hmac.compare_digest`), accepts any of several
secrets (rotation without downtime: old and new are active together) and any of
several signatures in a header, and raises :class:`SignatureError` whose
``reason`` is one of ``missing_signature``, ``bad_signature`` or
``stale_timestamp``. Messages are short and never contain a secret or an
expected signature.

``headers`` maps lower-case header names to values (Starlette's ``Headers``
and any dict with lower-case keys both do). Timestamps outside ``tolerance``
seconds of ``now`` in either direction are stale: too old is a replay, too far
in the future is a sender whose clock cannot be trusted. A timestamp is 1 to 15
ASCII digits (no sign, space or other Unicode digit); anything else is a
``bad_signature``, never an error of the server.

Schemes
- Stripe: ``Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>...]``; HMAC-SHA256
  of ``"{t}." + body`` keyed by the endpoint secret as text (``whsec_...``).
- HubSpot v3: ``X-HubSpot-Signature-v3`` = base64 HMAC-SHA256 of
  ``method + uri + body + timestamp`` keyed by the app's client secret, with
  ``X-HubSpot-Request-Timestamp`` in milliseconds. ``uri`` is the full URL the
  sender called (scheme, host, path, query), which behind a proxy is not what
  this server sees: the caller passes the configured public URL.
- GitHub: ``X-Hub-Signature-256: sha256=<hex>`` of the body; no timestamp, and
  ``X-GitHub-Delivery`` is not signed: replays are caught by an id made from the
  body and by ordering on the object's ``updated_at`` (:mod:`.github`).
- Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` (unix s) and
  ``webhook-signature`` (space-separated ``v1,<base64>``) over
  ``"{id}.{timestamp}." + body``; the secret is ``whsec_`` + base64 of the key.
- Generic HMAC-SHA256 of the body in a configurable header, hex or base64,
  with an optional prefix such as ``sha256=``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

Encoding = Literal["hex", "base64"]
DEFAULT_TOLERANCE = 300.0
# A signed timestamp: ASCII digits only, at most 15 (milliseconds until the year 33658). Not str.isdigit,
# which also accepts "²" and other Unicode digits that int() then refuses; no sign, no space, no underscore.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")

# HubSpot v3: these escapes are decoded in the URI before signing, per its request validation guide.
_HUBSPOT_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip


class SignatureError(Exception):
    """The delivery is not authentic (or not recent). ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _mac(key: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(part)
    return h.digest()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SignatureError("missing_signature", f"missing {name} header")
    return value


def _any_equal(expected: Sequence[bytes], given: Sequence[bytes]) -> bool:
    # Compare every pair without stopping early: the time taken depends only on the counts.
    found = False
    for e in expected:
        for g in given:
            found |= hmac.compare_digest(e, g)
    return found


def _must_match(expected: Sequence[bytes], given: Sequence[bytes], message: str) -> None:
    """SignatureError ``bad_signature`` (``message``) unless a given signature equals an expected one."""
    if not _any_equal(expected, given):
        raise SignatureError("bad_signature", message)


def _check_time(sent: float, now: float, tolerance: float) -> None:
    if abs(now - sent) > tolerance:
        raise SignatureError("stale_timestamp", "timestamp outside the tolerance")


def _timestamp(value: str, message: str) -> int:
    """A signed timestamp header's value as an int; SignatureError ``bad_signature`` unless 1 to 15 ASCII digits."""
    if _TIMESTAMP.fullmatch(value) is None:
        raise SignatureError("bad_signature", message)
    return int(value)


def _latin1(value: str) -> bytes:
    # Header values arrive decoded as latin-1; encoding back never fails and keeps them byte-exact.
    return value.encode("latin-1", "replace")


def _keys(secrets: Sequence[str]) -> list[bytes]:
    if not secrets:
        raise SignatureError("bad_signature", "no signing secret is configured")
    return [s.encode() for s in secrets]


# --- Stripe -------------------------------------------------------------------------------------


def verify_stripe(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float, tolerance: float = DEFAULT_TOLERANCE
) -> None:
    header = _header(headers, "stripe-signature")
    timestamp = ""
    given: list[bytes] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            given.append(_latin1(value.strip().lower()))
    if not given:
        raise SignatureError("bad_signature", "Stripe-Signature needs t= and v1=")
    sent = _timestamp(timestamp, "Stripe-Signature needs t= (unix seconds) and v1=")
    prefix = timestamp.encode() + b"."
    expected = [_mac(k, prefix, body).hex().encode() for k in _keys(secrets)]
    _must_match(expected, given, "no v1 signature matches")
    _check_time(sent, now, tolerance)


def sign_stripe(body: bytes, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` value a sender would put on ``body`` (tests, local replays)."""
    return f"t={timestamp},v1={_mac(secret.encode(), str(timestamp).encode(), b'.', body).hex()}"


# --- HubSpot v3 ---------------------------------------------------------------------------------


def hubspot_uri(uri: str) -> str:
    """The URI as HubSpot signs it: with the escapes its guide lists decoded, nothing else touched."""
    if "%" not in uri:
        return uri
    out = []
    i = 0
    while i < len(uri):
        chunk = uri[i : i + 3].upper()
        if uri[i] == "%" and chunk in _HUBSPOT_DECODE:
            out.append(_HUBSPOT_DECODE[chunk])
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def verify_hubspot_v3(
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    signature = _header(headers, "x-hubspot-signature-v3")
    timestamp = _header(headers, "x-hubspot-request-timestamp")
    sent = _timestamp(timestamp, "X-HubSpot-Request-Timestamp is not a number of milliseconds")
    head = method.upper().encode() + hubspot_uri(uri).encode()
    tail = timestamp.encode()
    expected = [base64.b64encode(_mac(k, head, body, tail)) for k in _keys(secrets)]
    _must_match(expected, [_latin1(signature.strip())], "X-HubSpot-Signature-v3 does not match")
    _check_time(sent / 1000.0, now, tolerance)


def sign_hubspot_v3(method: str, uri: str, body: bytes, secret: str, timestamp_ms: int) -> str:
    mac = _mac(secret.encode(), method.upper().encode(), hubspot_uri(uri).encode(), body, str(timestamp_ms).encode())
    return base64.b64encode(mac).decode()


# --- GitHub -------------------------------------------------------------------------------------


def verify_github(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    header = _header(headers, "x-hub-signature-256")
    if not header.startswith("sha256="):
        raise SignatureError("bad_signature", "X-Hub-Signature-256 must start with sha256=")
    expected = [_mac(k, body).hex().encode() for k in _keys(secrets)]
    _must_match(expected, [_latin1(header[7:].strip().lower())], "X-Hub-Signature-256 does not match")


def sign_github(body: bytes, secret: str) -> str:
    return "sha256=" + _mac(secret.encode(), body).hex()


# --- Standard Webhooks ------------------------------------------------------------------------


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64; the prefix is optional)."""
    text = secret[6:] if secret.startswith("whsec_") else secret
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a Standard Webhooks secret may not be empty")
    return key


def check_standard_secrets(secrets: Iterable[str], hint: str) -> None:
    """Raise ValueError naming ``hint`` (how to get a good one) when a secret is no Standard Webhooks secret."""
    for s in secrets:
        try:
            standard_key(s)
        except ValueError as exc:
            raise ValueError(f"{exc} ({hint})") from None


def verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signature = _header(headers, "webhook-signature")
    sent = _timestamp(timestamp, "webhook-timestamp is not a number of seconds")
    given = [_latin1(part[3:]) for part in signature.split(" ") if part.startswith("v1,")]
    if not given:
        raise SignatureError("bad_signature", "webhook-signature has no v1 signature")
    try:
        keys = [standard_key(s) for s in secrets]
    except ValueError:
        raise SignatureError("bad_signature", "the configured secret is not a Standard Webhooks secret") from None
    if not keys:
        raise SignatureError("bad_signature", "no signing secret is configured")
    prefix = _latin1(msg_id) + b"." + timestamp.encode() + b"."
    expected = [base64.b64encode(_mac(k, prefix, body)) for k in keys]
    _must_match(expected, given, "no v1 signature matches")
    _check_time(sent, now, tolerance)


def sign_standard(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-separated."""
    prefix = msg_id.encode() + b"." + str(timestamp).encode() + b"."
    return " ".join("v1," + base64.b64encode(_mac(standard_key(s), prefix, body)).decode() for s in secrets)


# --- generic HMAC -----------------------------------------------------------------------------


def verify_hmac(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    header: str,
    encoding: Encoding = "hex",
    prefix: str = "",
) -> None:
    value = _header(headers, header.lower()).strip()
    if prefix:
        if not value.startswith(prefix):
            raise SignatureError("bad_signature", f"{header} must start with {prefix}")
        value = value[len(prefix) :]
    macs = [_mac(k, body) for k in _keys(secrets)]
    if encoding == "hex":
        expected = [m.hex().encode() for m in macs]
        value = value.lower()
    else:
        expected = [base64.b64encode(m) for m in macs]
    _must_match(expected, [_latin1(value)], f"{header} does not match")


def sign_hmac(body: bytes, secret: str, encoding: Encoding = "hex", prefix: str = "") -> str:
    mac = _mac(secret.encode(), body)
    return prefix + (mac.hex() if encoding == "hex" else base64.b64encode(mac).decode())
