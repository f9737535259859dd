"""Logging for every program of ours: one text format for people, one JSON schema for log pipelines.

Every line carries a ``model_key``: the one given with ``extra={"model_key": ...}``, else the process's
own (the fetcher's model), else ``-`` for lines about no model in particular. JSON lines carry ``time``,
``level``, ``logger``, ``model_key`` and ``message``, plus any other field passed through ``extra=``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(model_key)s] %(message)s"
# Attributes every LogRecord has; anything else was passed through `extra=` and belongs in the JSON.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_NOISY = ("botocore", "boto3", "urllib3", "httpx2", "huggingface_hub", "s3transfer", "kubernetes")


class _ModelKeyFilter(logging.Filter):
    """Give every record a model_key: its own, else the process's."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "model_key"):
            record.model_key = self.key
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "model_key": getattr(record, "model_key", "-"),
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(*, fmt: str, level: str = "INFO", model_key: str = "-") -> None:
    """Log to stderr in `fmt` ("text" or "json") at `level`; `model_key` for lines that name none."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ModelKeyFilter(model_key))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
