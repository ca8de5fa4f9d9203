"""The codec the settings configure: Avro with registry framing iff a registry URL is set.

``codec_for(settings)`` is how a component gets its codec from the settings it was given (by
injection: nothing here reads the environment; the command that starts a component loads the
settings once and passes them down).
"""

from __future__ import annotations

from runtime.settings import Settings
from schemas.codec import Codec
from schemas.registry import SchemaRegistry


def codec_for(settings: Settings) -> Codec:
    """The codec the settings ask for: registry framing iff a registry URL is configured."""
    url = settings.schema_registry_url
    return Codec(settings.topics, SchemaRegistry(url) if url else None)
