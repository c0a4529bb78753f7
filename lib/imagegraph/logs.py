"""The jobs' log lines: `text` (`TEXT_FORMAT`) or `json` (`JsonFormatter`, one object per line),
and the run context the JSON lines carry.

The run context is a `contextvars.ContextVar`, set with `log_context` where a run's id, shard
and chunk become known (`infer.job`); a thread starts with an empty context, so the driver's
threads (`infer.background`, `runs.progress`, `runs.lease`) run their target `in_this_context`,
a copy of the context of the thread that starts them. The formatter reads the context of the
thread that logs: the handlers write synchronously.

The Python workers of a local Spark share the driver's stderr: `cli.setup_logging` puts the
format in the environment (`LOG_FORMAT_ENV`), which they inherit, and the line a worker writes
there (`model.cache`) is a `worker_line`."""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, Iterator

TEXT, JSON = "text", "json"
LOG_FORMATS = (TEXT, JSON)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LOG_FORMAT_ENV = "IMAGEGRAPH_LOG_FORMAT"

_CONTEXT: ContextVar[dict[str, str | int]] = ContextVar("imagegraph_log_context")


@contextmanager
def log_context(**fields: str | int) -> Iterator[None]:
    """Within the block, this thread's JSON log lines carry `fields` (`run_id`, `shard`,
    `chunk`) besides those of enclosing blocks."""
    token = _CONTEXT.set({**_CONTEXT.get({}), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def in_this_context(target: Callable[..., Any]) -> Callable[..., Any]:
    """`target`, run in a copy of this thread's context: a thread's target that logs with
    the run context of the thread that starts it."""
    return partial(copy_context().run, target)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: `time` (ISO-8601 UTC to the millisecond,
    `2026-12-06T20:37:44.123Z`), `level`, `logger`, `message` (arguments merged), the run
    context's keys when set, and `exception` (its traceback) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str | int] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_CONTEXT.get({}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of `log_format`, one of `LOG_FORMATS`."""
    return JsonFormatter() if log_format == JSON else logging.Formatter(TEXT_FORMAT)


def worker_line(logger: str, message: str) -> str:
    """`message` as a line of the format in `LOG_FORMAT_ENV`: as is unless that is `json`,
    else an INFO record of `logger` formatted by `JsonFormatter`."""
    if os.environ.get(LOG_FORMAT_ENV) != JSON:
        return message
    return JsonFormatter().format(
        logging.LogRecord(logger, logging.INFO, "", 0, message, None, None))
