"""The Avro contracts: one ``.avsc`` value schema per topic, named after its ``Topics`` field.

The files are the source of truth for producers and consumers in any language; this module only
finds and reads them, so the codec, the compatibility tests and the registry all see the same text.

- ``<kind>.avsc``           the current schema of topic kind ``<kind>`` (a record, or a union of
                            records when the topic carries several event types);
- ``previous/<kind>.avsc``  the last released version, which the current one must stay compatible
                            with as :data:`COMPATIBILITY` says (``tests/test_schema_compat.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent
PREVIOUS_DIR = SCHEMA_DIR / "previous"
NAMESPACE = "ai.inference.billing"

# The attribute names of settings.Topics, in the same order.
TOPIC_KINDS = (
    "usage",
    "payments",
    "accounts",
    "control",
    "account_state",
    "dead_letter",
    "usage_rated",
    "account_status",
)

# Evolution policy: what ``<kind>.avsc`` must keep with ``previous/<kind>.avsc`` (Confluent's names,
# so a registry can enforce the same with PUT /config/<topic>-value). BACKWARD: the new schema reads
# old data, so the reader upgrades first; on input topics the billing worker is the only reader.
# FULL: old readers also read new data, because other teams read the output topics and upgrade on
# their own schedule; a new output type is therefore a coordinated, announced change.
COMPATIBILITY = {
    "usage": "BACKWARD",
    "payments": "BACKWARD",
    "accounts": "BACKWARD",
    "control": "BACKWARD",
    "account_state": "FULL",
    "dead_letter": "FULL",
    "usage_rated": "FULL",
    "account_status": "FULL",
}

# Topics whose schema was their first record alone until it became a union with a packing record
# (``RatedUsageBatch``). Without a registry a value carries no schema version, and the union adds a
# branch byte in front of every value: the codec reads a value that is not a message of the union
# as that one record, so messages older workers wrote (still on the topic, read again by a new sink
# or a rebuild of ClickHouse) stay readable. Only for a topic our own workers write: on an input
# topic the second reading would take some corrupt values for events (the fuzz test found one),
# so ``usage`` (``UsageBatch``) has no such reading, and its producers upgrade with the workers.
WAS_ONE_RECORD = ("usage_rated",)


def schema_path(kind: str, *, previous: bool = False) -> Path:
    """Where the (current or previous released) schema of a topic kind lives."""
    if kind not in TOPIC_KINDS:
        raise KeyError(f"unknown topic kind {kind!r}; expected one of {', '.join(TOPIC_KINDS)}")
    return (PREVIOUS_DIR if previous else SCHEMA_DIR) / f"{kind}.avsc"


def load_schema(kind: str, *, previous: bool = False) -> Any:
    """The schema of a topic kind as parsed JSON (a record dict or a list of record dicts)."""
    return json.loads(schema_path(kind, previous=previous).read_text())


def schema_text(kind: str) -> str:
    """The current schema as compact JSON: the text registered with a schema registry."""
    return json.dumps(load_schema(kind), separators=(",", ":"))
