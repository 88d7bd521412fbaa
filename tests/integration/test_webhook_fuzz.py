"""Property: whatever arrives at the intake, the answer is never a 5xx, and every accepted event is journaled once.

Hypothesis throws random and malformed bodies, content types and headers at
three webhook sources (Stripe, GitHub, generic with Standard Webhooks), some
correctly signed, some signed and then tampered, some with random event ids
that repeat. A model remembers which event ids were accepted; after the run
the journal holds exactly those, each once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.webhook_support import asgi_client, runtime_for, webhook_source
from tidesync.sources.webhook.github import github_event_id
from tidesync.sources.webhook.signatures import sign_github, sign_standard, sign_stripe
from tidesync.state import open_state_store

STRIPE_SECRET = "whsec_fuzz"
GH_SECRET = "gh-fuzz"
SW_SECRET = "whsec_" + base64.b64encode(b"fuzzing-key-of-some-length-0123").decode()

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
header_name = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
event_ids = st.sampled_from([f"evt_{i}" for i in range(15)]) | st.text(min_size=1, max_size=12)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    known = st.sampled_from(["stripe-f", "gh-f", "gen-f"])
    source = draw(known if draw(st.integers(0, 9)) else st.sampled_from(["nope", "../x", "stripe-f%00", "STRIPE-F"]))
    kind = draw(st.sampled_from(["event", "json", "bytes"]))
    event_id = draw(event_ids)
    if kind == "event":
        if source.startswith("gh"):
            doc: Any = {
                "action": "opened",
                "issue": {"number": 1, "title": event_id},
                "repository": {"full_name": "a/b"},
            }
        else:
            doc = {"id": event_id, "object": "event", "type": "customer.updated", "created": 1, "data": {"x": 1}}
        body = msgspec.json.encode(doc)
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    else:
        body = draw(st.binary(max_size=300))
    headers = dict(draw(st.dictionaries(header_name, header_text, max_size=4)))
    json_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "application/x+json"])
    headers["content-type"] = draw(json_types if draw(st.integers(0, 9)) else (st.just("text/plain") | header_text))
    signing = draw(st.sampled_from(["right", "right", "right", "tampered", "none", "garbage"]))
    now = int(time.time())
    if signing in ("right", "tampered"):
        if source.startswith("stripe"):
            headers["stripe-signature"] = sign_stripe(body, STRIPE_SECRET, now)
        elif source.startswith("gh"):
            headers["x-hub-signature-256"] = sign_github(body, GH_SECRET)
            headers["x-github-event"] = draw(st.sampled_from(["issues", "pull_request", "ping", "push"]))
            headers["x-github-delivery"] = draw(st.text("abcdef0123456789-", min_size=1, max_size=12))
            event_id = github_event_id(body)  # the delivery header is unsigned: the id comes from the body
        else:
            headers.update({"webhook-id": event_id, "webhook-timestamp": str(now)})
            headers["webhook-signature"] = sign_standard(event_id, now, body, [SW_SECRET])
        if signing == "tampered":
            body = body + draw(st.binary(min_size=1, max_size=5))
    elif signing == "garbage":
        for name in ("stripe-signature", "x-hub-signature-256", "webhook-signature", "webhook-timestamp"):
            headers[name] = draw(header_text)
    return {"source": source, "body": body, "headers": headers, "signing": signing, "id": event_id}


def test_random_and_malformed_deliveries_never_get_a_5xx_and_accepted_ones_are_journaled_once(tmp_path: Path) -> None:
    with asyncio.Runner() as runner:
        store = open_state_store(f"sqlite:///{tmp_path}/state.db")
        runner.run(store.open())
        sources = [
            (webhook_source(provider="stripe", name="stripe-f", secrets=[STRIPE_SECRET]), "p1"),
            (webhook_source(provider="github", name="gh-f", secrets=[GH_SECRET]), "p2"),
            (
                webhook_source(
                    provider="generic", name="gen-f", secrets=[SW_SECRET],
                    signature={"scheme": "standard-webhooks"},
                    mapping={"event_id_header": "webhook-id", "entity": "e", "key": ["id"]},
                ),
                "p3",
            ),
        ]  # fmt: skip
        runtime = runtime_for(store, *sources, max_body_bytes=400)
        accepted: dict[str, list[str]] = {"stripe-f": [], "gh-f": [], "gen-f": []}
        statuses: dict[int, int] = {}
        client_cm = asgi_client(runtime)
        client = runner.run(client_cm.__aenter__())

        @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(req=requests())
        def one(req: dict[str, Any]) -> None:
            async def post() -> Any:
                return await client.post(f"/webhooks/{req['source']}", content=req["body"], headers=req["headers"])

            try:
                response = runner.run(post())
            except ValueError:  # httpx refuses to send some header values at all: nothing reached the server
                return
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            statuses[0] = statuses.get(0, 0) + 1
            assert response.status_code < 500, (req, response.text)
            assert response.status_code in (200, 400, 401, 404, 413, 415, 422), response.status_code
            if response.status_code != 200:
                assert "Traceback" not in response.text and len(response.text) < 200
                return
            answer = response.json()
            name = req["source"]
            assert req["signing"] == "right", req  # only a correct signature gets a 2xx
            event_id = req["id"]
            if answer["accepted"]:
                assert answer == {"accepted": 1, "duplicates": 0, "ignored": 0}
                assert event_id not in accepted[name]
                accepted[name].append(event_id)
            elif answer["duplicates"]:
                assert event_id in accepted[name]
            else:
                assert answer["ignored"] == 1 and name == "gh-f"

        one()
        for name, ids in accepted.items():
            journaled = [e.event_id for e in runner.run(store.journal_read(name, 0, 10_000))]
            assert journaled == ids, name  # every accepted payload, once, in order
        runner.run(client_cm.__aexit__(None, None, None))
        runner.run(store.close())
    assert (
        statuses[0] >= 150 and statuses.get(200, 0) > 15 and statuses.get(401, 0) > 10 and statuses.get(400, 0) > 0
    ), statuses
