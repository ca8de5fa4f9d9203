"""The codec the settings configure: Avro with registry framing iff a registry URL is set.

``codec_for(settings)`` is how a component gets its codec from the settings it was given. The
module-level ``encode``/``decode``/``decode_input`` use the process-wide ``default_codec()``, built
from the environment once: for tools and tests; the worker and the sink are given theirs.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from billing.events import DEFAULT_MAX_ID_BYTES
from runtime.settings import Settings, load_settings
from schemas.codec import Codec
from schemas.registry import SchemaRegistry


def codec_for(settings: Settings) -> Codec:
    """The codec the settings ask for: registry framing iff a registry URL is configured."""
    url = settings.schema_registry_url
    return Codec(settings.topics, SchemaRegistry(url) if url else None)


@cache
def default_codec() -> Codec:
    """The process-wide codec built from the environment (``load_settings()``)."""
    return codec_for(load_settings())


def encode(kind: str, event: dict[str, Any]) -> bytes:
    """:meth:`Codec.encode` with the codec the environment configures."""
    return default_codec().encode(kind, event)


def decode(kind: str, data: bytes) -> dict[str, Any]:
    """:meth:`Codec.decode` with the codec the environment configures."""
    return default_codec().decode(kind, data)


def decode_input(kind: str, data: bytes,
                 max_id_bytes: int = DEFAULT_MAX_ID_BYTES) -> dict[str, Any]:
    """:meth:`Codec.decode_input` with the codec the environment configures."""
    return default_codec().decode_input(kind, data, max_id_bytes)
