"""key=value log lines, so stack logs can be grepped and parsed without a JSON logger."""

from __future__ import annotations

import logging


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\t\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def log_event(
    logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object
) -> None:
    """Log ``event=<event> k=v ...``; values with spaces or quotes are quoted.

    The event name is part of the message template (``record.msg``), so that the repeated-line
    filter (``runtime/logs.py``), which counts lines by template, tells one event from another.
    """
    if logger.isEnabledFor(level):
        pairs = " ".join(f"{key}={_value(value)}" for key, value in fields.items())
        logger.log(level, f"event={event.replace('%', '%%')} %s", pairs)
