"""The schemas keep the contract, and every change to them stays compatible with the last release.

Evolution policy (``schemas.COMPATIBILITY``, docs/contracts.md): each ``schemas/<kind>.avsc`` must
read data written with ``schemas/previous/<kind>.avsc`` (BACKWARD); on the output topics, which
other teams read, the previous schema must also read data written with the new one (FULL). The
checker is the ``avro`` package's ``ReaderWriterCompatibilityChecker``, the port of the Java
implementation that schema registries use.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas import (
    COMPATIBILITY,
    NAMESPACE,
    PREVIOUS_DIR,
    SCHEMA_DIR,
    TOPIC_KINDS,
    load_schema,
)
from schemas.shapes import records

TIME = {"type": "long", "logicalType": "timestamp-millis"}


def compatibility(reader: Any, writer: Any) -> bool:
    """Whether data written with ``writer`` can be read with ``reader``."""
    checker = ReaderWriterCompatibilityChecker()
    result = checker.get_compatibility(avro.schema.parse(json.dumps(reader)),
                                       avro.schema.parse(json.dumps(writer)))
    return result.compatibility is SchemaCompatibilityType.compatible


def allowed(new: Any, old: Any, level: str) -> bool:
    """Whether replacing ``old`` by ``new`` keeps compatibility ``level`` (BACKWARD or FULL)."""
    backward = compatibility(new, old)
    return backward and compatibility(old, new) if level == "FULL" else backward


# --- the evolution policy ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_current_schema_keeps_its_compatibility_with_the_previous_release(kind: str) -> None:
    assert allowed(load_schema(kind), load_schema(kind, previous=True), COMPATIBILITY[kind])


def test_every_schema_has_a_policy_and_a_previous_release_and_nothing_else_is_there() -> None:
    assert set(COMPATIBILITY) == set(TOPIC_KINDS)
    assert sorted(path.stem for path in PREVIOUS_DIR.glob("*.avsc")) == sorted(TOPIC_KINDS)
    assert sorted(path.stem for path in SCHEMA_DIR.glob("*.avsc")) == sorted(TOPIC_KINDS)


def edited(kind: str, change: str) -> Any:
    """The schema of a topic after one kind of edit of its first record."""
    schema = copy.deepcopy(load_schema(kind))
    record = schema[0] if isinstance(schema, list) else schema
    fields = record["fields"]
    required = next(field for field in fields if "default" not in field)
    if change == "add an optional field":
        fields.append({"name": "region", "type": ["null", "string"], "default": None, "doc": "d"})
    elif change == "add a required field":
        fields.append({"name": "region", "type": "string", "doc": "d"})
    elif change == "remove a required field":
        fields.remove(required)
    elif change == "change a type":
        required["type"] = "long"
    elif change == "remove a field with a default":
        record["fields"] = [field for field in fields if "default" not in field]
    return schema


@pytest.mark.parametrize(("change", "backward", "full"), [
    ("add an optional field", True, True),
    ("remove a field with a default", True, True),
    ("add a required field", False, False),  # new readers cannot fill it in for old data
    ("remove a required field", True, False),  # old readers still need it
    ("change a type", False, False),
])
@pytest.mark.parametrize("kind", ["usage", "dead_letter"])
def test_the_checker_tells_allowed_changes_from_breaking_ones(
    kind: str, change: str, backward: bool, full: bool
) -> None:
    new, old = edited(kind, change), load_schema(kind)
    assert allowed(new, old, "BACKWARD") is backward
    assert allowed(new, old, "FULL") is full


def test_a_new_event_type_needs_readers_to_upgrade_first() -> None:
    """Allowed on an input topic (the worker is upgraded first), refused on an output topic."""
    def with_new_type(kind: str) -> list[dict[str, Any]]:
        new = {"type": "record", "name": "Refund", "namespace": NAMESPACE, "doc": "d",
               "fields": [{"name": "event_id", "type": "string", "doc": "d"}]}
        return [*load_schema(kind), new]

    assert allowed(with_new_type("payments"), load_schema("payments"), COMPATIBILITY["payments"])
    state = load_schema("account_state")
    assert not allowed(with_new_type("account_state"), state, COMPATIBILITY["account_state"])
    assert not allowed(state[:-1], state, "BACKWARD")  # dropping a type breaks old data


def test_rated_usage_batches_read_what_single_records_were_and_old_readers_cannot() -> None:
    """``RatedUsageBatch`` (issue 16) is announced like a new output type: the sink and other
    readers on the current schema read the single ``RatedUsage`` messages older workers wrote; a
    reader still on that one record cannot read a batch, so readers upgrade first."""
    rated = load_schema("usage_rated")
    assert [record["name"] for record in rated] == ["RatedUsage", "RatedUsageBatch"]
    assert compatibility(rated, rated[0])
    assert not compatibility(rated[0], rated)


# --- the schemas say what the contract says ------------------------------------------------------


@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_schema_parses_in_both_libraries(kind: str) -> None:
    avro.schema.parse(json.dumps(load_schema(kind)))
    fastavro.parse_schema(load_schema(kind))


@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_every_record_and_field_has_a_doc(kind: str) -> None:
    for record in records(load_schema(kind)):
        assert record.get("doc"), record["name"]
        for field in record["fields"]:
            assert field.get("doc"), f"{record['name']}.{field['name']}"


@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_no_floating_point_anywhere(kind: str) -> None:
    text = json.dumps(load_schema(kind))
    assert '"float"' not in text and '"double"' not in text


@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_optional_fields_are_null_first_with_a_null_default(kind: str) -> None:
    for record in records(load_schema(kind)):
        for field in record["fields"]:
            if isinstance(field["type"], list):
                assert field["type"][0] == "null" and field["default"] is None, field["name"]


def test_requests_defaults_to_one() -> None:
    usage, batch = load_schema("usage")
    for record in (usage, batch["fields"][-1]["type"]["items"]):
        requests = next(f for f in record["fields"] if f["name"] == "requests")
        assert requests["default"] == 1


def test_dead_letter_keeps_the_original_bytes() -> None:
    """... or, past the maximum message size, a prefix of them with their size and SHA-256."""
    fields = {field["name"]: field["type"] for field in load_schema("dead_letter")["fields"]}
    assert fields == {"key": ["null", "bytes"], "value": ["null", "bytes"], "topic": "string",
                      "partition": "int", "offset": "long", "reason": "string",
                      "field": ["null", "string"], "failed_at": TIME, "worker": "string",
                      "key_size": ["null", "long"], "key_sha256": ["null", "string"],
                      "key_truncated": "boolean", "value_size": ["null", "long"],
                      "value_sha256": ["null", "string"], "value_truncated": "boolean"}
