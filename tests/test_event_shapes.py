"""Each event's shape has one source: ``billing/event_shapes.py`` is generated from the ``.avsc``
files by ``schemas/shapes.py``, and stays what the generator writes from them now."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from schemas import load_schema, shapes
from schemas.shapes import COMMAND, GENERATED, ShapeError, event_type, field_kind, render

MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 6}


def test_the_generated_module_is_what_the_schemas_say() -> None:
    assert GENERATED.read_text() == render(), (
        f"{GENERATED.name} differs from the .avsc files: run `{COMMAND}` and commit the result")


def test_main_rewrites_the_module_only_when_it_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "event_shapes.py"
    monkeypatch.setattr(shapes, "GENERATED", target)
    shapes.main()
    assert target.read_text() == render()
    assert capsys.readouterr().out == f"wrote {target}\n"
    shapes.main()
    assert capsys.readouterr().out == f"{target} is up to date\n"


def test_a_field_added_to_an_avsc_appears_in_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes the first test fail until the module is regenerated."""
    usage = copy.deepcopy(load_schema("usage"))
    for record in (usage[0], usage[1]["fields"][-1]["type"]["items"]):  # Usage, BatchedUsage
        record["fields"].append({"name": "region", "type": ["null", "string"], "default": None,
                                 "doc": "d"})
    monkeypatch.setattr(shapes, "load_schema",
                        lambda kind: usage if kind == "usage" else load_schema(kind))
    inputs = shapes.tables()["INPUT_FIELDS"][1]
    assert inputs["usage"] == {"product": "str", "quantities": "quantities",
                               "requests": "requests", "region": "str?"}
    assert "region" in render() and "region" not in GENERATED.read_text()


def test_a_batch_record_must_pack_its_event_without_the_account(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``UsageBatch`` is no event type: its records are ``Usage`` events without account_id, and
    the generator refuses a batch whose records lost step with the event."""
    assert shapes.tables()["BATCH_TYPES"][1] == {"usage_batch": "usage"}
    assert "usage_batch" not in shapes.tables()["INPUT_FIELDS"][1]
    usage = copy.deepcopy(load_schema("usage"))
    usage[0]["fields"].append({"name": "region", "type": ["null", "string"], "default": None,
                               "doc": "d"})
    monkeypatch.setattr(shapes, "load_schema",
                        lambda kind: usage if kind == "usage" else load_schema(kind))
    with pytest.raises(shapes.ShapeError, match="UsageBatch must have the fields account_id"):
        shapes.tables()


@pytest.mark.parametrize(("avro_type", "kind"), [
    ("string", "str"),
    ("long", "int"),
    ("boolean", "bool"),
    ({"type": "long", "logicalType": "timestamp-millis"}, "time"),
    (MONEY, "money"),
    (["null", MONEY], "money?"),
    (["null", {"type": "int", "logicalType": "date"}], "date?"),
    ({"type": "map", "values": "long"}, "quantities"),
    ({"type": "array", "items": "string"}, "list[str]"),
    ({"type": "record", "name": "AutoTopUp", "fields": []}, "auto_top_up"),
    ("ai.inference.billing.Snapshot", "snapshot"),  # a record defined earlier in the file
])
def test_the_avro_type_implies_the_kind(avro_type: Any, kind: str) -> None:
    assert field_kind({"name": "f", "type": avro_type}, "R.f") == kind


@pytest.mark.parametrize("avro_type", [
    "double", "int", ["string", "null"], ["null", "string", "long"],
    {"type": "map", "values": "string"}, {**MONEY, "precision": 20},
    "other.namespace.Snapshot",
])
def test_a_type_with_no_kind_is_refused(avro_type: Any) -> None:
    with pytest.raises(ShapeError, match=re.escape("R.f: no billing kind")):
        field_kind({"name": "f", "type": avro_type}, "R.f")


@pytest.mark.parametrize(("avro_type", "billing_kind", "kind"), [
    (MONEY, "money>0", "money>0"),
    ("string", "period", "period"),
    (["null", "string"], "billing_model", "billing_model?"),  # "?" from the type
    ("long", "requests", "requests"),
])
def test_billing_kind_narrows_the_type(avro_type: Any, billing_kind: str, kind: str) -> None:
    field = {"name": "f", "type": avro_type, "billing_kind": billing_kind}
    assert field_kind(field, "R.f") == kind


@pytest.mark.parametrize(("avro_type", "billing_kind"), [
    ("string", "money>0"),  # another type's
    (MONEY, "money"),  # what the type says already
    ("string", "perod"),  # unknown
    ("long", "period"),
])
def test_a_billing_kind_that_does_not_narrow_the_type_is_refused(
    avro_type: Any, billing_kind: str
) -> None:
    field = {"name": "f", "type": avro_type, "billing_kind": billing_kind}
    refusal = re.escape(f"R.f: billing_kind '{billing_kind}' does not narrow")
    with pytest.raises(ShapeError, match=refusal):
        field_kind(field, "R.f")


@pytest.mark.parametrize(("other", "refusal"), [
    ({"event_id": "int"}, "b.event_id is 'int', not 'str'"),
    ({"x": "int"}, "b.event_id is None, not 'str'"),
])
def test_a_common_field_must_be_alike_in_every_record(other: dict[str, str], refusal: str) -> None:
    types = {"a": {"event_id": "str", "x": "int"}, "b": other}
    with pytest.raises(ShapeError, match=re.escape(refusal)):
        shapes.split_common(types, ("event_id",))


def test_the_common_fields_are_split_from_each_record_s_own() -> None:
    types = {"a": {"event_id": "str", "x": "int"}, "b": {"y": "bool", "event_id": "str"}}
    assert shapes.split_common(types, ("event_id",)) == (
        {"event_id": "str"}, {"a": {"x": "int"}, "b": {"y": "bool"}})


def test_event_types_are_record_names_in_snake_case() -> None:
    assert event_type("TopUpRequested") == "top_up_requested"
    with pytest.raises(ShapeError, match="not plain CamelCase"):
        event_type("usagePaused")
