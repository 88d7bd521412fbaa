"""Webhook source and sink config through the YAML loader: the api section, secrets, errors with lines."""

from __future__ import annotations

import pytest

from tidesync.config import load_config_text
from tidesync.errors import ConfigError
from tidesync.secrets import Secret
from tidesync.sinks.webhook import WebhookSinkConfig
from tidesync.sources.webhook import WebhookSourceConfig

GOOD = """\
state: sqlite:///state.db
api:
  listen: "0.0.0.0:9000"
  token: "${env:TS_WEBHOOK_TEST_TOKEN}"
  public_url: https://hooks.example.com
pipelines:
  - name: billing
    source:
      type: webhook
      provider: stripe
      secrets: ["${env:TS_WEBHOOK_TEST_SECRET}", whsec_old_one]
      stripe: {api_key: "${env:TS_WEBHOOK_TEST_SECRET}", backfill_every: 600}
    sink:
      type: webhook
      url: https://example.com/hook
      secrets: whsec_c2lua3Rlc3RrZXkwMTIzNDU2Nzg5MDEyMzQ1Njc4OQ==
      concurrency: 8
      retry: {initial_delay: 2, jitter: none}
"""


def test_a_webhook_pipeline_and_the_api_section_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_WEBHOOK_TEST_TOKEN", "tok-123456")
    monkeypatch.setenv("TS_WEBHOOK_TEST_SECRET", "whsec_new_one")
    loaded = load_config_text(GOOD)
    api = loaded.model.api
    assert api is not None and api.listen == "0.0.0.0:9000" and isinstance(api.token, Secret)
    assert api.token.get() == "tok-123456" and api.max_body_bytes == 1024 * 1024
    (spec,) = loaded.pipelines
    source, sink = spec.source, spec.sink
    assert isinstance(source, WebhookSourceConfig) and isinstance(sink, WebhookSinkConfig)
    assert source.secrets.values() == ["whsec_new_one", "whsec_old_one"]  # both active during a rotation
    monkeypatch.setenv("TS_WEBHOOK_TEST_SECRET", "whsec_rotated")
    assert source.secrets.values() == ["whsec_rotated", "whsec_old_one"]  # re-read, no restart
    assert source.guarded and source.stripe.backfill_every == 600
    assert (sink.concurrency, sink.retry.initial_delay, sink.retry.jitter) == (8, 2, "none")
    assert "whsec_rotated" not in str(loaded.redacted()) and "tok-123456" not in str(loaded.redacted())


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("provider: generic\n      secrets: s", "generic webhook source needs signature"),
        ("provider: paypal\n      secrets: s", "provider"),
        (
            "provider: github\n      secrets: s\n      mapping: {entity: x, event_id: id, key: [id]}",
            "for provider generic",
        ),
        (
            "provider: generic\n      secrets: s\n      signature: {header: X-S}\n"
            "      mapping: {entity: x, event_id: id, key: ['a..b']}",
            "bad path",
        ),
        ("provider: stripe\n      secrets: s\n      tolerance: -1", "greater than 0"),
        (
            "provider: generic\n      secrets: s\n      signature: {header: X-S}\n"
            "      mapping: {entity: x, event_id_header: X-Id, key: [id]}",
            "event_id_header X-Id is not covered by the hmac-sha256 signature",
        ),
        ("provider: stripe\n      secrets: s\n      max_age: 60", "stripe signs one"),
        (
            "provider: generic\n      secrets: s\n      max_age: 60\n      signature: {header: X-S}\n"
            "      mapping: {entity: x, event_id: id, key: [id]}",
            "max_age needs mapping.timestamp",
        ),
    ],
)
def test_bad_webhook_source_config_names_the_key_and_line(snippet: str, message: str) -> None:
    text = f"pipelines:\n  - name: p\n    source:\n      type: webhook\n      {snippet}\n    sink: {{type: null}}\n"
    with pytest.raises(ConfigError, match=message) as info:
        load_config_text(text)
    assert "<config>:" in str(info.value) and "pipelines[0].source" in str(info.value)


def test_a_sink_secret_must_be_a_standard_webhooks_secret() -> None:
    text = (
        "pipelines:\n  - name: p\n    source: {type: webhook, provider: github, secrets: s}\n"
        "    sink: {type: webhook, url: 'https://x/h', secrets: 'not base64 !'}\n"
    )
    with pytest.raises(ConfigError, match=r"whsec_ followed by base64.*generate one"):
        load_config_text(text)
    with pytest.raises(ConfigError, match="url"):
        load_config_text(text.replace("https://x/h", "ftp://x/h"))
