"""Logging set-up for the command line; the library itself never configures handlers."""

from __future__ import annotations

import json
import logging
import sys
import time

LOGGER_NAMES = ("bizproxy", "uvicorn", "uvicorn.error")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(
    level: str = "info", log_format: str = "text", *, access_log: bool = False
) -> None:
    """Send bizproxy's and uvicorn's loggers to stderr, once, at `level`; the access log
    (one line per request) only when asked for."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    access = logging.getLogger("bizproxy.access")
    access.setLevel(logging.INFO if access_log else logging.WARNING)
