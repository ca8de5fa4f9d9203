"""Dead letters as the worker writes them: bounded in size whatever the input.

Size. No input may make its dead letter too large to send (a send that fails would stop the worker
on every restart). A dead letter keeps the original key and value byte for byte up to the maximum
message size (never more than :data:`INLINE_CEILING`); past it, only their first
:data:`PREFIX_BYTES`, with their full length and SHA-256, and redrive fetches the whole message
from its topic, partition and offset while Kafka retains it. Reason, field and worker texts are
cut to a few KiB. So a dead letter is at most about ``2 * INLINE_CEILING`` + 8 KiB, well under
Kafka's default 1 MB message limit, whatever the input.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from runtime.settings import DEFAULT_MAX_MESSAGE_BYTES
from schemas.codec import Codec

PREFIX_BYTES = 1024  # what a dead letter keeps of a key or value larger than the limit
INLINE_CEILING = 256 * 1024  # a key or value larger than this is cut, whatever the limit
REASON_BYTES = 4096  # UTF-8 bytes of reason kept
TEXT_BYTES = 1024  # UTF-8 bytes kept of the other texts (field, worker, topic)
DEAD_LETTER_KEY_BYTES = 1024  # a longer original key is replaced by its hash as the Kafka key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The Kafka key to send a dead letter with: the original key, or ``sha256:<hex>`` of it when
    it is longer than :data:`DEAD_LETTER_KEY_BYTES` (the same original key gives the same one, so
    one account's dead letters still share a partition)."""
    if key is None or len(key) <= DEAD_LETTER_KEY_BYTES:
        return key
    return b"sha256:" + sha256_hex(key).encode()


def clip_text(text: str, limit: int) -> str:
    """``text`` if its UTF-8 is at most ``limit`` bytes, else its start (whole characters) and
    how much was cut, within ``limit`` bytes."""
    data = text.encode("utf-8", "replace")  # a lone surrogate (not encodable) becomes ?
    if len(data) <= limit:
        return data.decode("utf-8")
    marker = f" ... [{len(data):,} bytes, cut]"
    return data[:limit - len(marker)].decode("utf-8", "ignore") + marker


def _kept(data: bytes | None, keep: int) -> tuple[bytes | None, int | None, str | None, bool]:
    """What a dead letter holds of a key or value: (bytes kept, full size, sha256, truncated)."""
    if data is None:
        return None, None, None, False
    truncated = len(data) > keep
    return (data[:PREFIX_BYTES] if truncated else data), len(data), sha256_hex(data), truncated


def make_dead_letter(
    reason: str,
    field: str | None,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    worker: str,
    *,
    failed_at: datetime | None = None,
    codec: Codec,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> bytes:
    """The dead-letter message value for a rejected input (``failed_at`` defaults to now).

    ``max_bytes`` is ``settings.max_message_bytes``: a key or value larger than it (or than
    :data:`INLINE_CEILING`) is kept as its first :data:`PREFIX_BYTES`, with its size and SHA-256;
    the texts are cut to a few KiB. The result is below 600 KiB whatever the arguments.
    """
    keep = max(0, min(max_bytes, INLINE_CEILING))
    kept_key, key_size, key_sha256, key_truncated = _kept(key, keep)
    kept_value, value_size, value_sha256, value_truncated = _kept(value, keep)
    letter = {
        "key": kept_key,
        "value": kept_value,
        "topic": clip_text(topic, TEXT_BYTES),
        "partition": partition,
        "offset": offset,
        "reason": clip_text(reason, REASON_BYTES),
        "field": None if field is None else clip_text(field, TEXT_BYTES),
        "failed_at": failed_at or datetime.now(UTC),
        "worker": clip_text(worker, TEXT_BYTES),
        "key_size": key_size,
        "key_sha256": key_sha256,
        "key_truncated": key_truncated,
        "value_size": value_size,
        "value_sha256": value_sha256,
        "value_truncated": value_truncated,
    }
    return codec.encode("dead_letter", letter)


