"""MQTT topic templates, config validation and the wire helpers: pure, no broker."""

from __future__ import annotations

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from tidesync.errors import PermanentError, SystemicError, TransientError
from tidesync.sinks.mqtt.config import MqttSinkConfig
from tidesync.sinks.mqtt.topics import check_template, entity_level, render
from tidesync.sinks.mqtt.wire import (
    ID_PROPERTY,
    Broker,
    connect_error,
    message_id,
    publish_error,
    publish_properties,
)
from tidesync.sinks.nats.subjects import partition_of
from tidesync.sources.mqtt.config import MqttSourceConfig


def test_one_key_always_renders_to_one_topic() -> None:
    topics = {render("cdc/{partition}/{entity}", "public.items", (42,), 8) for _ in range(5)}
    assert topics == {f"cdc/{partition_of((42,), 8)}/public.items"}
    spread = {render("cdc/{partition}", "e", (k,), 8) for k in range(200)}
    assert len(spread) == 8  # keys spread over every partition


def test_an_entity_is_one_topic_level_without_wildcards() -> None:
    assert entity_level("public.items") == "public.items"
    assert entity_level("a/b+c#d") == "a_b_c_d"
    assert render("cdc/{entity}", "a/b", (1,), None) == "cdc/a_b"


@pytest.mark.parametrize(
    ("template", "partitions", "why"),
    [
        ("cdc/{table}", None, "unknown placeholder"),
        ("cdc/{partition}", None, "set partitions"),
        ("cdc/#", None, "wildcard"),
        ("cdc/+/{entity}", None, "wildcard"),
        ("", None, "empty"),
    ],
)
def test_bad_templates_are_refused(template: str, partitions: int | None, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_template(template, partitions)
    with pytest.raises(ValidationError):
        MqttSinkConfig(topic=template, partitions=partitions)


def test_config_defaults_and_typos() -> None:
    sink = MqttSinkConfig()
    assert (sink.topic, sink.qos, sink.retain, sink.format) == ("cdc/{entity}", 1, False, "tidesync")
    source = MqttSourceConfig()
    assert (source.topics, source.qos, source.client_id, source.format) == (["cdc/#"], 1, None, "tidesync")
    with pytest.raises(ValidationError):
        MqttSourceConfig.model_validate({"topic": ["cdc/#"]})  # extra="forbid": a typo is an error
    with pytest.raises(ValidationError):
        MqttSinkConfig(url="http://127.0.0.1:1883")
    with pytest.raises(ValidationError):
        MqttSinkConfig.model_validate({"qos": 2})


def test_broker_urls() -> None:
    assert Broker.parse("mqtt://127.0.0.1:1883") == Broker("127.0.0.1", 1883, False, None, None)
    b = Broker.parse("mqtts://us%40r:p%3Ass@broker.example")
    assert (b.host, b.port, b.tls, b.username, b.password) == ("broker.example", 8883, True, "us@r", "p:ss")
    assert b.redacted() == "mqtts://broker.example:8883"  # no credentials in messages


def test_the_id_property_round_trips() -> None:
    props = publish_properties("p/sink/items/1", "application/json")
    assert message_id(props) == "p/sink/items/1"
    assert message_id(None) is None
    other = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    other.UserProperty = [("x", "y")]
    assert message_id(other) is None
    assert ID_PROPERTY == "tidesync-id"


def test_errors_are_translated_by_what_to_do_next() -> None:
    broker = Broker.parse("mqtt://127.0.0.1:1")
    refused = MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=0x86))  # bad user name or password
    assert isinstance(connect_error(refused, broker), SystemicError)
    assert isinstance(connect_error(aiomqtt.MqttError("[Errno 111] Connection refused"), broker), TransientError)
    assert isinstance(connect_error(TimeoutError(), broker), TransientError)
    assert isinstance(publish_error(aiomqtt.MqttError("Operation timed out"), "t"), TransientError)
    assert isinstance(publish_error(ValueError("Payload too large."), "t"), PermanentError)
    busy = aiomqtt.MqttCodeError(ReasonCode(PacketTypes.PUBACK, identifier=0x97))  # quota exceeded
    assert isinstance(publish_error(busy, "t"), TransientError)
    with pytest.raises(KeyError):
        publish_error(KeyError("a bug"), "t")  # not a driver error: not hidden
