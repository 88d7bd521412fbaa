"""The write side of the HubSpot fake: property definitions, records with unique properties, associations.

Pure (no HTTP): :class:`~tidesync.testing.hubspot.FakeHubSpot` serves it. Each
method takes a request body as HubSpot documents it and returns ``(status,
answer)`` in HubSpot's shapes:

- ``GET /crm/v3/properties/{type}``: ``{results: [{name, label, type, fieldType,
  description, groupName, options: [{label, value, displayOrder, hidden}],
  hasUniqueValue, modificationMetadata}]}``.
- ``POST /crm/v3/objects/{type}/batch/{create|upsert|update|read|archive}``: at most
  100 inputs (400 above; a read asking ``propertiesWithHistory`` at most 50, as
  HubSpot limits property-history reads). Every write keeps, per record and
  property, the values it held (:meth:`CrmStore.remember`), and a read with
  ``propertiesWithHistory: [names]`` answers them per record as HubSpot does:
  ``propertiesWithHistory: {name: [{value, timestamp, sourceType, sourceId,
  ...}]}``, newest first (a write through the API is ``sourceType:
  INTEGRATION``; :meth:`FakeHubSpot.upsert`, a person's edit, ``CRM_UI``).
  A property that does not exist, or a value outside an enumeration's options,
  refuses the whole batch with 400 (as HubSpot does: ``PROPERTY_DOESNT_EXIST`` /
  ``INVALID_OPTION``, naming the property).
  Inputs refused one by one (an update of an id that does not exist, a value
  listed in :attr:`CrmStore.refuse`) give 207 with ``errors`` whose
  ``context`` holds ``ids`` and the input's ``objectWriteTraceId``; the rest
  are applied. Answers: ``{status: COMPLETE, results, startedAt, completedAt}``
  (plus ``numErrors`` and ``errors`` with 207); archive answers 204.
- ``POST /crm/v4/associations/{from}/{to}/batch/associate/default`` and
  ``.../batch/archive``; ``PUT /crm/v4/objects/{from}/{id}/associations/default/{to}/{toId}``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections import Counter
from typing import Any

MAX_INPUTS = 100
MAX_HISTORY_INPUTS = 50  # a batch read with propertiesWithHistory
API_SOURCE = {"sourceType": "INTEGRATION", "sourceId": "1234567", "sourceLabel": "tidesync"}  # a private app's write
UI_SOURCE = {"sourceType": "CRM_UI", "sourceId": "userId:9001", "updatedByUserId": 9001}  # a person in the HubSpot UI
TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tickets": "0-5"}
# HubSpot's default (unlabelled) association type ids, by (from, to)
DEFAULT_ASSOCIATION = {("contacts", "companies"): 279, ("companies", "contacts"): 280, ("deals", "contacts"): 3,
                       ("contacts", "deals"): 4, ("deals", "companies"): 341, ("companies", "deals"): 342}  # fmt: skip


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def prop(name: str, type_: str = "string", *, options: list[str] | None = None, unique: bool = False,
         field_type: str | None = None, read_only: bool = False) -> dict[str, Any]:  # fmt: skip
    """A property definition in the shape ``GET /crm/v3/properties/{type}`` answers."""
    ft = field_type or {"string": "text", "number": "number", "date": "date", "datetime": "date",
                        "bool": "booleancheckbox", "enumeration": "select"}.get(type_, "text")  # fmt: skip
    return {
        "name": name, "label": name.replace("_", " ").title(), "type": type_, "fieldType": ft,
        "description": "", "groupName": "contactinformation", "displayOrder": -1, "calculated": False,
        "externalOptions": False, "hasUniqueValue": unique, "hidden": False, "formField": True,
        "createdAt": "2020-01-01T00:00:00Z", "updatedAt": "2020-01-01T00:00:00Z", "archived": False,
        "options": [{"label": o.title(), "value": o, "displayOrder": n, "hidden": False}
                    for n, o in enumerate(options or [])],
        "modificationMetadata": {"archivable": True, "readOnlyDefinition": False, "readOnlyValue": read_only},
    }  # fmt: skip


LIFECYCLE = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer"]


def default_properties() -> dict[str, dict[str, dict[str, Any]]]:
    common = [
        prop("tidesync_key", unique=True),
        prop("createdate", "datetime", read_only=True),
        prop("hs_object_id", "number", read_only=True),
        prop("hs_lastmodifieddate", "datetime", read_only=True),
    ]
    contacts = [
        prop("email", unique=True),
        prop("firstname"),
        prop("lastname"),
        prop("phone"),
        prop("lifecyclestage", "enumeration", options=LIFECYCLE),
        prop("birthdate", "date"),
        prop("last_seen", "datetime"),
        prop("score", "number"),
        prop("vip", "bool"),
        prop("lastmodifieddate", "datetime", read_only=True),
    ]
    companies = [
        prop("name"),
        prop("domain", unique=True),
        prop("numberofemployees", "number"),
        prop("industry", "enumeration", options=["SOFTWARE", "RETAIL", "FINANCE", "HEALTH"]),
    ]
    deals = [prop("dealname"), prop("amount", "number"), prop("dealstage", "enumeration",
             options=["appointmentscheduled", "qualifiedtobuy", "closedwon", "closedlost"])]  # fmt: skip
    return {t: {p["name"]: p for p in [*common, *ps]}
            for t, ps in (("contacts", contacts), ("companies", companies), ("deals", deals))}  # fmt: skip


def _error(message: str, category: str = "VALIDATION_ERROR", **extra: Any) -> dict[str, Any]:
    return {"status": "error", "message": message, "correlationId": "00000000-0000-0000-0000-000000000000",
            "category": category, **extra}  # fmt: skip


class CrmStore:
    """Records by object type and id, with unique-property indexes and associations. Thread-safe."""

    def __init__(self, records: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.records = records  # shared with the search side: type -> id -> record
        self.properties = default_properties()
        self.associations: set[tuple[str, str, str, str]] = set()  # (from type, from id, to type, to id), both ways
        self.created: Counter[tuple[str, str]] = Counter()  # (type, unique value) -> records created for it
        self.refuse: dict[tuple[str, str], str] = {}  # (type, id or id-property value) -> message: a 207 error
        self.lock = threading.RLock()
        self._index: dict[tuple[str, str], dict[str, str]] = {}  # (type, unique property) -> value -> id
        self._ids = itertools.count(1001)
        self.history: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}  # (type, id) -> name -> newest first

    def remember(self, object_type: str, rid: str, old: dict[str, Any], new: dict[str, Any], at: str,
                 source: dict[str, Any]) -> None:  # fmt: skip
        """Keep, for each property whose value ``new`` changes (or sets first), the value it now holds."""
        with self.lock:
            kept = self.history.setdefault((object_type, rid), {})
            for name, value in new.items():
                if name not in old or old[name] != value:
                    text = "" if value is None else str(value)
                    kept.setdefault(name, []).insert(0, {"value": text, "timestamp": at, **source})

    # --- properties -----------------------------------------------------------------------------

    def list_properties(self, object_type: str) -> tuple[int, dict[str, Any]]:
        if object_type not in self.properties:
            return 400, _error(f"Unable to infer object type from: {object_type}")
        return 200, {"results": list(self.properties[object_type].values())}

    def define(self, object_type: str, definition: dict[str, Any]) -> None:
        self.properties.setdefault(object_type, {})[definition["name"]] = definition

    def _validate(self, object_type: str, inputs: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A 400 answer for the whole batch when an input names a missing property or an option not offered."""
        defs = self.properties.get(object_type, {})
        for inp in inputs:
            for name, value in (inp.get("properties") or {}).items():
                d = defs.get(name)
                if d is None:
                    return _error(f'Property values were not valid: [{{"isValid":false,"message":"Property \\"{name}'
                                  f'\\" does not exist","error":"PROPERTY_DOESNT_EXIST","name":"{name}"}}]',
                                  errors=[{"message": f'Property "{name}" does not exist',
                                           "code": "PROPERTY_DOESNT_EXIST",
                                           "context": {"propertyName": [name]}}])  # fmt: skip
                if d["type"] == "enumeration" and value not in ("", None):
                    allowed = {o["value"] for o in d["options"]}
                    chosen = str(value).split(";") if d["fieldType"] == "checkbox" else [str(value)]
                    if any(c not in allowed for c in chosen):
                        return _error(f'Property values were not valid: [{{"isValid":false,"message":"{value} was '
                                      f'not one of the allowed options","error":"INVALID_OPTION","name":"{name}"}}]',
                                      errors=[{"message": f"{value} was not one of the allowed options",
                                               "code": "INVALID_OPTION",
                                               "context": {"propertyName": [name]}}])  # fmt: skip
        return None

    # --- records --------------------------------------------------------------------------------

    def _find(self, object_type: str, id_property: str | None, value: str) -> dict[str, Any] | None:
        table = self.records.get(object_type, {})
        if not id_property or id_property == "hs_object_id":
            return table.get(value)
        if self._unique(object_type, id_property):
            rid = self._index.get((object_type, id_property), {}).get(value)
            return table.get(rid) if rid is not None else None
        for r in table.values():  # not a unique property: a scan (HubSpot refuses it as idProperty anyway)
            if r["properties"].get(id_property) == value:
                return r
        return None

    def _unique(self, object_type: str, name: str) -> bool:
        return bool(self.properties.get(object_type, {}).get(name, {}).get("hasUniqueValue"))

    def _reindex(self, object_type: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Keep the unique-property indexes in step with one record replaced (``new`` None: archived)."""
        for record, add in ((old, False), (new, True)):
            if record is None:
                continue
            for name, value in record["properties"].items():
                if value not in (None, "") and self._unique(object_type, name):
                    index = self._index.setdefault((object_type, name), {})
                    if add:
                        index[value] = record["id"]
                    elif index.get(value) == record["id"]:
                        del index[value]

    def _apply(self, object_type: str, record: dict[str, Any] | None, props: dict[str, Any],
               unique: tuple[str, str] | None = None) -> tuple[dict[str, Any], bool]:  # fmt: skip
        now = now_iso()
        table = self.records.setdefault(object_type, {})
        new = record is None
        if record is None:
            rid = str(next(self._ids))
            record = {"id": rid, "properties": {"hs_object_id": rid, "createdate": now}, "createdAt": now}
            if unique is not None:
                record["properties"][unique[0]] = unique[1]
                self.created[(object_type, unique[1])] += 1
        merged = {**record["properties"], **{k: ("" if v is None else str(v)) for k, v in props.items()}}
        merged["hs_lastmodifieddate"] = now
        if object_type == "contacts":
            merged["lastmodifieddate"] = now
        self.remember(object_type, record["id"], {} if new else record["properties"], merged, now, API_SOURCE)
        kept = {k: v for k, v in record.items() if k != "_sortable"}  # the search side's cache of the old values
        old, record = (None if new else record), {**kept, "properties": merged, "updatedAt": now}
        self._reindex(object_type, old, record)
        table[record["id"]] = record  # replaced whole (the search side caches per record)
        return record, new

    def _shown(self, record: dict[str, Any], names: list[str] | None, trace: Any = None, new: bool | None = None
               ) -> dict[str, Any]:  # fmt: skip
        props = record["properties"]
        shown = {k: props.get(k) for k in names} if names else dict(props)
        out = {"id": record["id"], "properties": shown, "createdAt": record["createdAt"],
               "updatedAt": record["updatedAt"], "archived": False}  # fmt: skip
        if trace is not None:
            out["objectWriteTraceId"] = trace
        if new is not None:
            out["new"] = new
        return out

    def _batch(self, inputs: list[dict[str, Any]], apply: Any) -> tuple[int, dict[str, Any]]:
        started = now_iso()
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for inp in inputs:
            outcome = apply(inp)
            (errors if outcome.get("status") == "error" else results).append(outcome)
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                  "completedAt": now_iso()}  # fmt: skip
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
            return 207, answer
        return 200, answer

    def _checked(self, object_type: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], tuple[int, Any] | None]:
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            return [], (400, _error("inputs: must be a list"))
        if len(inputs) > MAX_INPUTS:
            return [], (400, _error(f"Batch size of {len(inputs)} exceeds the limit of {MAX_INPUTS} inputs",
                                    context={"maxInputs": [str(MAX_INPUTS)]}))  # fmt: skip
        bad = self._validate(object_type, inputs)
        return inputs, ((400, bad) if bad is not None else None)

    def _refused(self, object_type: str, ref: str, trace: Any) -> dict[str, Any] | None:
        message = self.refuse.get((object_type, ref))
        if message is None:
            return None
        return _error(message, context={"ids": [ref], **({"objectWriteTraceId": [trace]} if trace else {})})

    def upsert(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            inputs, bad = self._checked(object_type, body)
            if bad is not None:
                return bad
            defs = self.properties.get(object_type, {})

            def one(inp: dict[str, Any]) -> dict[str, Any]:
                id_property, value, trace = inp.get("idProperty"), str(inp.get("id")), inp.get("objectWriteTraceId")
                refused = self._refused(object_type, value, trace)
                if refused is not None:
                    return refused
                if id_property and not defs.get(id_property, {}).get("hasUniqueValue"):
                    return _error(f"{id_property} is not a unique property", context={"ids": [value]})
                record = self._find(object_type, id_property, value)
                record, new = self._apply(object_type, record, inp.get("properties") or {}, (id_property or "", value))
                return self._shown(record, None, trace, new)

            return self._batch(inputs, one)

    def create(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``batch/create``: 201 with the new records; a unique value another record holds refuses the whole
        batch with 409 (``CONFLICT``: ``... already exists. Existing ID: <id>``), as HubSpot does."""
        with self.lock:
            inputs, bad = self._checked(object_type, body)
            if bad is not None:
                return bad
            for inp in inputs:
                for name, value in (inp.get("properties") or {}).items():
                    if value in (None, "") or not self._unique(object_type, name):
                        continue
                    taken = self._index.get((object_type, name), {}).get(str(value))
                    if taken is not None:
                        return 409, _error(f"{object_type} already exists. Existing ID: {taken}", "CONFLICT")
            results = []
            for inp in inputs:
                props = inp.get("properties") or {}
                record, _ = self._apply(object_type, None, props)
                for name, value in props.items():
                    if value not in (None, "") and self._unique(object_type, name):
                        self.created[(object_type, str(value))] += 1
                results.append(self._shown(record, None, inp.get("objectWriteTraceId")))
            return 201, {"status": "COMPLETE", "results": results, "startedAt": now_iso(), "completedAt": now_iso()}

    def update(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            inputs, bad = self._checked(object_type, body)
            if bad is not None:
                return bad

            def one(inp: dict[str, Any]) -> dict[str, Any]:
                ref, trace = str(inp.get("id")), inp.get("objectWriteTraceId")
                refused = self._refused(object_type, ref, trace)
                if refused is not None:
                    return refused
                record = self._find(object_type, inp.get("idProperty"), ref)
                if record is None:
                    traced = {"objectWriteTraceId": [trace]} if trace else {}
                    return _error(f"Object not found. objectId: {ref}", "OBJECT_NOT_FOUND",
                                  context={"ids": [ref], **traced})  # fmt: skip
                record, _ = self._apply(object_type, record, inp.get("properties") or {})
                return self._shown(record, None, trace)

            return self._batch(inputs, one)

    def read(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            with_history = body.get("propertiesWithHistory") or []
            inputs = body.get("inputs")
            if with_history and isinstance(inputs, list) and len(inputs) > MAX_HISTORY_INPUTS:
                return 400, _error(f"The maximum number of inputs supported in a batch request for property "
                                   f"histories is {MAX_HISTORY_INPUTS}. Please reduce the number of items and try "
                                   "again")  # fmt: skip
            inputs, bad = self._checked(object_type, body)
            if bad is not None:
                return bad
            names = body.get("properties") or None

            def one(inp: dict[str, Any]) -> dict[str, Any]:
                ref = str(inp.get("id"))
                record = self._find(object_type, body.get("idProperty"), ref)
                if record is None:
                    return _error(f"Could not get some {object_type} objects, they may be deleted or not exist",
                                  "OBJECT_NOT_FOUND", context={"ids": [ref]})  # fmt: skip
                shown = self._shown(record, names)
                if with_history:
                    kept = self.history.get((object_type, record["id"]), {})
                    shown["propertiesWithHistory"] = {n: [dict(e) for e in kept.get(n, ())] for n in with_history}
                return shown

            return self._batch(inputs, one)

    def archive(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        with self.lock:
            inputs, bad = self._checked(object_type, body)
            if bad is not None:
                return bad
            table = self.records.get(object_type, {})
            for inp in inputs:
                rid = str(inp.get("id"))
                gone_record = table.pop(rid, None)
                if gone_record is not None:
                    self._reindex(object_type, gone_record, None)
                    gone = (object_type, rid)
                    self.associations = {a for a in self.associations
                                         if (a[0], a[1]) != gone and (a[2], a[3]) != gone}  # fmt: skip
            return 204, None

    # --- associations ---------------------------------------------------------------------------

    def _spec(self, a: str, b: str) -> dict[str, Any]:
        return {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": DEFAULT_ASSOCIATION.get((a, b), 1)}

    def associate(self, a: str, b: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            inputs = body.get("inputs")
            if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
                return 400, _error(f"inputs: a list of at most {MAX_INPUTS}")

            def one(inp: dict[str, Any]) -> dict[str, Any]:
                f, t = str(inp["from"]["id"]), str(inp["to"]["id"])
                missing = [x for x, (typ, rid) in (("from", (a, f)), ("to", (b, t)))
                           if rid not in self.records.get(typ, {})]  # fmt: skip
                if missing:
                    return _error(f"No {a if missing[0] == 'from' else b} with id {f if missing[0] == 'from' else t}",
                                  "OBJECT_NOT_FOUND", context={"ids": [f]})  # fmt: skip
                self.associations |= {(a, f, b, t), (b, t, a, f)}
                return {"from": {"id": f}, "to": {"id": t}, "associationSpec": self._spec(a, b)}

            return self._batch(inputs, one)

    def unassociate(self, a: str, b: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        with self.lock:
            inputs = body.get("inputs")
            if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
                return 400, _error(f"inputs: a list of at most {MAX_INPUTS}")
            for inp in inputs:
                f = str(inp["from"]["id"])
                for to in inp.get("to") or []:
                    t = str(to["id"])
                    self.associations -= {(a, f, b, t), (b, t, a, f)}
            return 204, None

    def associated(self, a: str, record_id: str, b: str) -> list[str]:
        with self.lock:
            return sorted(t for (x, f, y, t) in self.associations if (x, f, y) == (a, record_id, b))
