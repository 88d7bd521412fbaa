"""Signature schemes against each provider's own library where one exists, else the documented algorithm."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import time

import pytest
import standardwebhooks
import stripe

from tidesync.sources.webhook.signatures import (
    SignatureError,
    hubspot_uri,
    sign_github,
    sign_hmac,
    sign_hubspot_v3,
    sign_standard,
    sign_stripe,
    standard_key,
    verify_github,
    verify_hmac,
    verify_hubspot_v3,
    verify_standard,
    verify_stripe,
)

NOW = 1_700_000_000.0
BODY = b'{"id":"evt_1","object":"event","type":"customer.updated","data":{"object":{"id":"cus_1"}}}'


def reason(call: object) -> str:
    with pytest.raises(SignatureError) as info:
        call()  # type: ignore[operator]
    return info.value.reason


# --- Stripe (the stripe package makes the header) -------------------------------------------------


def test_stripe_header_made_by_the_stripe_package_is_accepted_and_a_tampered_copy_is_not() -> None:
    secret = "whsec_test_secret"
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), secret, timestamp=int(NOW))
    verify_stripe(BODY, {"stripe-signature": header}, [secret], NOW)
    tampered = BODY.replace(b"cus_1", b"cus_2")
    assert reason(lambda: verify_stripe(tampered, {"stripe-signature": header}, [secret], NOW)) == "bad_signature"
    # a re-serialised body (what a JSON framework would hand over) is not the signed bytes
    spaced = BODY.replace(b",", b", ")
    assert reason(lambda: verify_stripe(spaced, {"stripe-signature": header}, [secret], NOW)) == "bad_signature"


def test_stripe_rotation_tolerance_and_missing_headers() -> None:
    old, new = "whsec_old", "whsec_new"
    t = int(NOW)
    # during a rotation Stripe signs with both secrets: two v1 entries
    both = f"t={t},v1={sign_stripe(BODY, old, t).split('v1=')[1]},v1={sign_stripe(BODY, new, t).split('v1=')[1]}"
    verify_stripe(BODY, {"stripe-signature": both}, [new], NOW)
    # the receiver may hold both secrets and the sender only the old one
    verify_stripe(BODY, {"stripe-signature": sign_stripe(BODY, old, t)}, [new, old], NOW)
    assert reason(lambda: verify_stripe(BODY, {"stripe-signature": sign_stripe(BODY, "whsec_x", t)}, [new], NOW)) == (
        "bad_signature"
    )
    late = NOW + 301
    assert reason(lambda: verify_stripe(BODY, {"stripe-signature": sign_stripe(BODY, new, t)}, [new], late)) == (
        "stale_timestamp"
    )
    verify_stripe(BODY, {"stripe-signature": sign_stripe(BODY, new, t)}, [new], late, tolerance=600)
    assert reason(lambda: verify_stripe(BODY, {}, [new], NOW)) == "missing_signature"
    for broken in ("t=abc,v1=00", f"t={t}", "v1=00", "garbage", f"t={t},v1=\u00e9\u00e9"):
        assert reason(lambda b=broken: verify_stripe(BODY, {"stripe-signature": b}, [new], NOW)) == "bad_signature"
    assert reason(lambda: verify_stripe(BODY, {"stripe-signature": sign_stripe(BODY, new, t)}, [], NOW)) == (
        "bad_signature"
    )


def test_our_stripe_signer_passes_the_stripe_package_check() -> None:
    t = int(time.time())
    header = sign_stripe(BODY, "whsec_abc", t)
    assert stripe.WebhookSignature.verify_header(BODY.decode(), header, "whsec_abc", tolerance=300)


# --- GitHub (documented worked example) ------------------------------------------------------------


def test_github_documented_example() -> None:
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_github(body, secret) == expected
    verify_github(body, {"x-hub-signature-256": expected}, [secret])
    verify_github(body, {"x-hub-signature-256": expected.upper().replace("SHA256=", "sha256=")}, [secret])
    assert reason(lambda: verify_github(b"Hello, World?", {"x-hub-signature-256": expected}, [secret])) == (
        "bad_signature"
    )
    assert reason(lambda: verify_github(body, {"x-hub-signature-256": expected[7:]}, [secret])) == "bad_signature"
    assert reason(lambda: verify_github(body, {}, [secret])) == "missing_signature"
    verify_github(body, {"x-hub-signature-256": expected}, ["rotated-new", secret])


# --- HubSpot v3 (documented algorithm, worked example) ------------------------------------------------

HS_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
HS_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
    b'"changeFlag":"NEW","appId":54321}]'
)
HS_URI = "https://www.example.com/webhook_uri"
HS_TS = "1564113600000"


def documented_hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """Written from HubSpot's guide: base64(HMAC-SHA256(secret, method + uri + body + timestamp)), UTF-8."""
    source = method + uri + body.decode("utf-8") + timestamp
    return base64.b64encode(hmac.new(secret.encode(), source.encode("utf-8"), hashlib.sha256).digest()).decode()


def test_hubspot_v3_worked_example() -> None:
    expected = "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw="  # computed once by the guide's steps
    assert documented_hubspot_v3(HS_SECRET, "POST", HS_URI, HS_BODY, HS_TS) == expected
    assert sign_hubspot_v3("POST", HS_URI, HS_BODY, HS_SECRET, int(HS_TS)) == expected
    headers = {"x-hubspot-signature-v3": expected, "x-hubspot-request-timestamp": HS_TS}
    sent_at = int(HS_TS) / 1000
    verify_hubspot_v3("POST", HS_URI, HS_BODY, headers, [HS_SECRET], sent_at + 10)
    assert reason(lambda: verify_hubspot_v3("POST", HS_URI, HS_BODY + b" ", headers, [HS_SECRET], sent_at)) == (
        "bad_signature"
    )
    # the URI is signed: the address this server sees behind a proxy does not verify
    inner = "http://10.0.0.5:8080/webhook_uri"
    assert reason(lambda: verify_hubspot_v3("POST", inner, HS_BODY, headers, [HS_SECRET], sent_at)) == ("bad_signature")
    assert reason(lambda: verify_hubspot_v3("POST", HS_URI, HS_BODY, headers, [HS_SECRET], sent_at + 301)) == (
        "stale_timestamp"
    )
    no_ts = {"x-hubspot-signature-v3": expected}
    assert reason(lambda: verify_hubspot_v3("POST", HS_URI, HS_BODY, no_ts, [HS_SECRET], sent_at)) == (
        "missing_signature"
    )
    bad_ts = {**headers, "x-hubspot-request-timestamp": "soon"}
    assert reason(lambda: verify_hubspot_v3("POST", HS_URI, HS_BODY, bad_ts, [HS_SECRET], sent_at)) == ("bad_signature")


def test_hubspot_v3_decodes_the_listed_escapes_of_the_uri_only() -> None:
    raw = "https://hooks.example.com/webhooks/hs?next=%2Fa%3Fb%3Dc%40d&x=%20y"
    assert hubspot_uri(raw) == "https://hooks.example.com/webhooks/hs?next=/a?b%3Dc@d&x=%20y"
    ts = "1700000000000"
    sig = documented_hubspot_v3(HS_SECRET, "POST", hubspot_uri(raw), HS_BODY, ts)
    headers = {"x-hubspot-signature-v3": sig, "x-hubspot-request-timestamp": ts}
    verify_hubspot_v3("POST", raw, HS_BODY, headers, [HS_SECRET], 1_700_000_000.0)


# --- Standard Webhooks (the standardwebhooks package signs and checks) ----------------------------------

SW_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_standard_webhooks_signature_made_by_the_package_is_accepted() -> None:
    wh = standardwebhooks.Webhook(SW_SECRET)
    sent = dt.datetime.fromtimestamp(NOW, dt.UTC)
    sig = wh.sign("msg_1", sent, BODY.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(NOW)), "webhook-signature": sig}
    verify_standard(BODY, headers, [SW_SECRET], NOW)
    assert reason(lambda: verify_standard(BODY + b"x", headers, [SW_SECRET], NOW)) == "bad_signature"
    other_id = {**headers, "webhook-id": "msg_2"}
    assert reason(lambda: verify_standard(BODY, other_id, [SW_SECRET], NOW)) == "bad_signature"
    assert reason(lambda: verify_standard(BODY, headers, [SW_SECRET], NOW + 301)) == "stale_timestamp"
    assert reason(lambda: verify_standard(BODY, headers, [SW_SECRET], NOW - 301)) == "stale_timestamp"
    # several signatures (a sender rotating), the matching one last, and an unknown version ignored
    other = "whsec_" + base64.b64encode(b"another key of enough length!!").decode()
    several = {**headers, "webhook-signature": f"v1a,xyz {sign_standard('msg_1', int(NOW), BODY, [other])} {sig}"}
    verify_standard(BODY, several, [SW_SECRET], NOW)
    verify_standard(BODY, headers, [other, SW_SECRET], NOW)
    assert reason(lambda: verify_standard(BODY, headers, [other], NOW)) == "bad_signature"
    assert reason(lambda: verify_standard(BODY, {"webhook-id": "x"}, [SW_SECRET], NOW)) == "missing_signature"
    assert reason(lambda: verify_standard(BODY, headers, ["not base64 !"], NOW)) == "bad_signature"


def test_our_standard_signature_passes_the_package_check() -> None:
    ts = int(time.time())
    headers = {"webhook-id": "msg_x", "webhook-timestamp": str(ts), "webhook-signature": ""}
    headers["webhook-signature"] = sign_standard("msg_x", ts, BODY, [SW_SECRET])
    assert standardwebhooks.Webhook(SW_SECRET).verify(BODY, headers) == {
        "id": "evt_1",
        "object": "event",
        "type": "customer.updated",
        "data": {"object": {"id": "cus_1"}},
    }
    assert standard_key(SW_SECRET) == b"0123456789abcdef0123456789abcdef"
    with pytest.raises(ValueError):
        standard_key("whsec_")


# --- generic HMAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "prefix"), [("hex", ""), ("hex", "sha256="), ("base64", ""), ("base64", "v1=")])
def test_generic_hmac_header(encoding: str, prefix: str) -> None:
    value = sign_hmac(BODY, "s3cret", encoding, prefix)  # type: ignore[arg-type]
    mac = hmac.new(b"s3cret", BODY, hashlib.sha256).digest()
    assert value == prefix + (mac.hex() if encoding == "hex" else base64.b64encode(mac).decode())
    verify_hmac(BODY, {"x-sig": value}, ["other", "s3cret"], "X-Sig", encoding, prefix)  # type: ignore[arg-type]
    assert reason(lambda: verify_hmac(BODY[:-1], {"x-sig": value}, ["s3cret"], "X-Sig", encoding, prefix)) == (  # type: ignore[arg-type]
        "bad_signature"
    )
    assert reason(lambda: verify_hmac(BODY, {}, ["s3cret"], "X-Sig", encoding, prefix)) == "missing_signature"  # type: ignore[arg-type]
    if prefix:
        bare = value[len(prefix) :]
        assert reason(lambda: verify_hmac(BODY, {"x-sig": bare}, ["s3cret"], "X-Sig", encoding, prefix)) == (  # type: ignore[arg-type]
            "bad_signature"
        )


# --- malformed signed timestamps: a bad signature, never an exception of another kind ------------------

ODD_TIMESTAMPS = ["²", "١٢٣", " 123", "123 ", "+123", "-123", "1_000", "12.5", "", "9" * 16, "9" * 5000]


@pytest.mark.parametrize("ts", ODD_TIMESTAMPS)
def test_a_timestamp_that_is_not_ascii_digits_is_a_bad_signature_in_every_scheme(ts: str) -> None:
    # signed correctly over the odd text, so only the timestamp's syntax can refuse it
    stripe_mac = hmac.new(b"whsec_x", ts.encode() + b"." + BODY, hashlib.sha256).hexdigest()
    stripe_header = {"stripe-signature": f"t={ts},v1={stripe_mac}"}
    assert reason(lambda: verify_stripe(BODY, stripe_header, ["whsec_x"], NOW)) == "bad_signature"
    hs_mac = hmac.new(b"hs", b"POSThttps://h/x" + BODY + ts.encode(), hashlib.sha256).digest()
    hs = {"x-hubspot-signature-v3": base64.b64encode(hs_mac).decode(), "x-hubspot-request-timestamp": ts}
    assert reason(lambda: verify_hubspot_v3("POST", "https://h/x", BODY, hs, ["hs"], NOW)) in (
        "bad_signature",
        "missing_signature",
    )
    sw_mac = hmac.new(standard_key(SW_SECRET), b"m1." + ts.encode() + b"." + BODY, hashlib.sha256).digest()
    sw = {"webhook-id": "m1", "webhook-timestamp": ts, "webhook-signature": "v1," + base64.b64encode(sw_mac).decode()}
    assert reason(lambda: verify_standard(BODY, sw, [SW_SECRET], NOW)) in ("bad_signature", "missing_signature")
