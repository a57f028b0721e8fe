"""Logging for every process: text for a terminal (the default), or JSON lines for a log pipeline
(``OPENI2V_LOG_FORMAT=json``), each line about a prediction carrying its id.

A worker sets ``prediction`` while it runs a job, so every line logged meanwhile in its thread
names the job; a line about another prediction names it with ``extra={"prediction_id": ...}``.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar

from openi2v.config import Settings

prediction: ContextVar[str | None] = ContextVar("prediction", default=None)
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        prediction_id = getattr(record, "prediction_id", None) or prediction.get()
        if prediction_id:
            line["prediction_id"] = prediction_id
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
