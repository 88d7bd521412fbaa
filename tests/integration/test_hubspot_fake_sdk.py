"""The HubSpot fake's write side is shaped as HubSpot documents it: the official SDK (``hubspot-api-client``),
pointed at it, performs batch upsert, update, read and archive, reads properties, creates, lists and archives
associations, lists archived records, and parses every answer into its typed models (a shape it does not expect
raises)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import (
    BatchInputPublicAssociationMultiArchive,
    BatchInputPublicDefaultAssociationMultiPost,
    PublicAssociationMultiArchive,
    PublicDefaultAssociationMultiPost,
    PublicObjectId,
)
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
)

from tidesync.testing.hubspot import FakeHubSpot, serve_in_thread

TOKEN = "pat-na1-fake"


def upserts(*emails: str, stage: str = "lead") -> BatchInputSimplePublicObjectBatchInputUpsert:
    return BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        SimplePublicObjectBatchInputUpsert(id=e, id_property="email", properties={"firstname": e[:2],
                                                                                   "lifecyclestage": stage})
        for e in emails])  # fmt: skip


def test_the_sdk_writes_reads_and_associates_through_the_fake() -> None:
    fake = FakeHubSpot()
    with serve_in_thread(fake.app) as url:
        sdk = HubSpot(access_token=TOKEN, host=url)
        props = sdk.crm.properties.core_api.get_all(object_type="contacts")
        stage = next(p for p in props.results if p.name == "lifecyclestage")
        assert stage.type == "enumeration" and "customer" in [o.value for o in stage.options]
        assert next(p for p in props.results if p.name == "email").has_unique_value

        made = sdk.crm.contacts.batch_api.upsert(upserts("a@x.test", "b@x.test"))
        assert made.status == "COMPLETE" and sorted(r.new for r in made.results) == [True, True]
        ids = {r.properties["email"]: r.id for r in made.results}
        again = sdk.crm.contacts.batch_api.upsert(upserts("a@x.test", stage="customer"))
        assert [(r.id, r.new) for r in again.results] == [(ids["a@x.test"], False)]

        fake.crm.refuse[("contacts", "c@x.test")] = "Email address c@x.test is invalid"
        partial = sdk.crm.contacts.batch_api.upsert(upserts("c@x.test", "d@x.test"))
        assert partial.num_errors == 1 and partial.errors[0].context["ids"] == ["c@x.test"]
        assert partial.errors[0].message == "Email address c@x.test is invalid"
        assert [r.properties["email"] for r in partial.results] == ["d@x.test"]

        updated = sdk.crm.contacts.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=[
            SimplePublicObjectBatchInput(id=ids["b@x.test"], properties={"firstname": "Bee"})]))  # fmt: skip
        assert updated.results[0].properties["firstname"] == "Bee"
        missing = sdk.crm.contacts.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=[
            SimplePublicObjectBatchInput(id="999999", properties={"firstname": "x"})]))  # fmt: skip
        assert missing.errors[0].category == "OBJECT_NOT_FOUND"

        read = sdk.crm.contacts.batch_api.read(BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id="a@x.test")], id_property="email",
            properties=["email", "lifecyclestage"], properties_with_history=[]))  # fmt: skip
        assert read.results[0].id == ids["a@x.test"] and read.results[0].properties["lifecyclestage"] == "customer"

        company = sdk.crm.companies.batch_api.upsert(BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
            SimplePublicObjectBatchInputUpsert(id="co-1", id_property="tidesync_key",
                                               properties={"name": "Acme"})])).results[0].id  # fmt: skip
        v4 = sdk.crm.associations.v4
        linked = v4.batch_api.create_default("contacts", "companies", BatchInputPublicDefaultAssociationMultiPost(
            inputs=[PublicDefaultAssociationMultiPost(_from=PublicObjectId(id=ids["a@x.test"]),
                                                      to=PublicObjectId(id=company))]))  # fmt: skip
        assert linked.results[0].association_spec.association_type_id == 279
        one = v4.basic_api.create_default("contacts", ids["b@x.test"], "companies", company)
        assert one.results[0].to.id == company
        page = v4.basic_api.get_page("companies", company, "contacts")
        assert sorted(r.to_object_id for r in page.results) == sorted([ids["a@x.test"], ids["b@x.test"]])
        v4.batch_api.archive("contacts", "companies", BatchInputPublicAssociationMultiArchive(inputs=[
            PublicAssociationMultiArchive(_from=PublicObjectId(id=ids["a@x.test"]),
                                          to=[PublicObjectId(id=company)])]))  # fmt: skip
        assert [r.to_object_id for r in v4.basic_api.get_page("companies", company, "contacts").results] == [
            ids["b@x.test"]]  # fmt: skip

        sdk.crm.contacts.batch_api.archive(BatchInputSimplePublicObjectId(inputs=[
            SimplePublicObjectId(id=ids["b@x.test"])]))  # fmt: skip
        assert ids["b@x.test"] not in fake.snapshot("contacts")
        assert fake.crm.associated("companies", company, "contacts") == []  # archiving drops associations
        listed = sdk.crm.contacts.basic_api.get_page(archived=True, properties=["email"])  # the archived list
        assert [(r.id, r.archived, r.properties["email"]) for r in listed.results] == [
            (ids["b@x.test"], True, "b@x.test")]  # fmt: skip
        assert listed.results[0].archived_at is not None  # parsed into a datetime
        assert ids["b@x.test"] not in [r.id for r in sdk.crm.contacts.basic_api.get_page(limit=100).results]

        with pytest.raises(ApiException) as too_many:
            sdk.crm.contacts.batch_api.upsert(upserts(*(f"n{i}@x.test" for i in range(101))))
        assert too_many.value.status == 400 and "limit of 100" in json.loads(too_many.value.body)["message"]
        with pytest.raises(ApiException) as bad_option:
            sdk.crm.contacts.batch_api.upsert(upserts("e@x.test", stage="platinum"))
        assert bad_option.value.status == 400 and "INVALID_OPTION" in bad_option.value.body
        with pytest.raises(ApiException) as unknown:
            sdk.crm.contacts.batch_api.update(BatchInputSimplePublicObjectBatchInput(inputs=[
                SimplePublicObjectBatchInput(id=ids["a@x.test"], properties={"shoe_size": "44"})]))  # fmt: skip
        assert unknown.value.status == 400 and "PROPERTY_DOESNT_EXIST" in unknown.value.body


def test_the_sdk_reads_property_history_through_the_fake() -> None:
    """A batch read with ``propertiesWithHistory``: each property's values newest first, parsed into the SDK's
    ``ValueWithTimestamp`` (a datetime ``timestamp``, ``source_type``), and at most 50 records a read."""
    fake = FakeHubSpot()
    with serve_in_thread(fake.app) as url:
        sdk = HubSpot(access_token=TOKEN, host=url)
        made = sdk.crm.contacts.batch_api.upsert(upserts("h@x.test"))  # through the API: INTEGRATION
        rid = made.results[0].id
        fake.upsert("contacts", int(rid), 4_000_000_000_000, firstname="Hal")  # a person's edit in the UI, later
        read = sdk.crm.contacts.batch_api.read(BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=rid)], properties=["firstname"],
            properties_with_history=["firstname", "lifecyclestage", "phone"]))  # fmt: skip
        (record,) = read.results
        assert record.properties["firstname"] == "Hal"
        first = record.properties_with_history["firstname"]
        assert [(v.value, v.source_type) for v in first] == [("Hal", "CRM_UI"), ("h@", "INTEGRATION")]
        assert first[0].timestamp.year == 2096 and first[0].timestamp > first[1].timestamp  # newest first
        assert [v.value for v in record.properties_with_history["lifecyclestage"]] == ["lead"]
        assert record.properties_with_history["phone"] == []  # never set

        more = sdk.crm.contacts.batch_api.upsert(upserts(*(f"m{i}@x.test" for i in range(50))))
        ids = [SimplePublicObjectId(id=r.id) for r in more.results]  # 51 records with rid

        def read_many(inputs: list[SimplePublicObjectId], history: list[str]) -> Any:
            return sdk.crm.contacts.batch_api.read(BatchReadInputSimplePublicObjectId(
                inputs=inputs, properties=["email"], properties_with_history=history))  # fmt: skip

        assert len(read_many(ids, ["firstname"]).results) == 50
        with pytest.raises(ApiException) as over:
            read_many([*ids, SimplePublicObjectId(id=rid)], ["firstname"])
        assert over.value.status == 400 and "property histories is 50" in json.loads(over.value.body)["message"]
        plain = read_many([*ids, SimplePublicObjectId(id=rid)], [])  # without history: up to 100
        assert len(plain.results) == 51 and plain.results[0].properties_with_history is None
