"""JSON-lines logging for the servers: one object a line on stderr. Configured by the servers
(gunicorn's hooks and logconfig), never at import. Imports nothing heavy, so gunicorn's master
can use it before prometheus_client is imported."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the record's extra fields."""

    RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which gunicorn worker, of several logging to one stream
        }
        line.update({k: v for k, v in vars(record).items() if k not in self.RESERVED and not k.startswith("_")})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO", *, everything: bool = False) -> None:
    """JSON lines on stderr for PEX's loggers (called by the servers and the workers, not at
    import). `everything`: the libraries' loggers too, through the root's (a worker process,
    where no gunicorn logconfig looks after the root)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("pex", "gunicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    if everything:
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level)


# gunicorn's own log lines (the master's too) in the same format, each once. gunicorn merges
# this over its defaults key by key, whose loggers both have a handler of their own and
# propagate to the root's: every line came out twice. Its access log is off: the app writes one
# line per request itself (pex.http.observability), with the request id and the route.
GUNICORN_LOGCONFIG = {
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "formatters": {"json": {"()": "pex.http.logs.JsonFormatter"}},
}
