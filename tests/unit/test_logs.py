"""`--log-format json`: each record one JSON object with exactly the documented keys, the run
context (run id, shard, chunk) where it was set, also in threads the driver starts for a run."""
from __future__ import annotations

import io
import json
import logging
import sys
import threading

from imagegraph.cli import setup_logging
from imagegraph.logs import (
    LOG_FORMAT_ENV,
    JsonFormatter,
    in_this_context,
    log_context,
    worker_line,
)

# 2026-12-06T20:37:44.123Z
CREATED = 1796589464.123


def record(message: str = "run %s: %d objects", args: tuple = ("r1", 3),
           exc_info=None) -> logging.LogRecord:
    made = logging.LogRecord("imagegraph.infer.job", logging.INFO, "job.py", 1, message, args,
                             exc_info)
    made.created = CREATED
    return made


def test_a_record_without_run_context_has_the_four_keys():
    assert json.loads(JsonFormatter().format(record())) == {
        "time": "2026-12-06T20:37:44.123Z", "level": "INFO", "logger": "imagegraph.infer.job",
        "message": "run r1: 3 objects"}


def test_a_record_in_a_run_carries_its_run_id_shard_and_chunk():
    with log_context(run_id="20261206T203744Z-ab12", shard="2/8"):
        with log_context(chunk=3):
            line = JsonFormatter().format(record())
        after_chunk = JsonFormatter().format(record())
    assert json.loads(line) == {
        "time": "2026-12-06T20:37:44.123Z", "level": "INFO", "logger": "imagegraph.infer.job",
        "message": "run r1: 3 objects", "run_id": "20261206T203744Z-ab12", "shard": "2/8",
        "chunk": 3}
    assert set(json.loads(after_chunk)) == {"time", "level", "logger", "message", "run_id",
                                            "shard"}
    assert set(json.loads(JsonFormatter().format(record()))) == {"time", "level", "logger",
                                                                 "message"}


def test_a_message_with_quotes_and_newlines_stays_one_line_and_an_exception_is_kept():
    try:
        raise ValueError("bad")
    except ValueError:
        line = JsonFormatter().format(record('a "b"\nc', (), sys.exc_info()))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == 'a "b"\nc'
    assert parsed["exception"].splitlines()[-1] == "ValueError: bad"


def test_a_thread_started_in_this_context_logs_with_the_run_context():
    seen: list[dict] = []

    def work() -> None:
        seen.append(json.loads(JsonFormatter().format(record())))

    with log_context(run_id="r1", chunk=1):
        threads = [threading.Thread(target=in_this_context(work)), threading.Thread(target=work)]
    for thread in threads:
        thread.start()
        thread.join()
    assert [(line.get("run_id"), line.get("chunk")) for line in seen] == [("r1", 1),
                                                                          (None, None)]


def test_setup_logging_json_writes_json_lines_on_stderr_and_tells_the_workers(monkeypatch):
    monkeypatch.delenv(LOG_FORMAT_ENV, raising=False)  # restored after the test
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []
    try:
        setup_logging("INFO", "json")
        with log_context(run_id="r9"):
            logging.getLogger("imagegraph.test").info("hello %s", "world")
        logging.getLogger("imagegraph.test").debug("not at INFO")
    finally:
        logging.captureWarnings(False)
        root.handlers, level = saved
        root.setLevel(level)
    [line] = stderr.getvalue().splitlines()
    parsed = json.loads(line)
    assert (parsed["logger"], parsed["level"], parsed["message"], parsed["run_id"]) == (
        "imagegraph.test", "INFO", "hello world", "r9")
    assert json.loads(worker_line("imagegraph.model.cache", "loaded"))["message"] == "loaded"


def test_a_worker_line_is_plain_text_unless_the_job_logs_json(monkeypatch):
    monkeypatch.delenv(LOG_FORMAT_ENV, raising=False)
    assert worker_line("imagegraph.model.cache", "model x loaded") == "model x loaded"
    monkeypatch.setenv(LOG_FORMAT_ENV, "text")
    assert worker_line("imagegraph.model.cache", "model x loaded") == "model x loaded"
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    line = json.loads(worker_line("imagegraph.model.cache", "model x loaded"))
    assert (set(line), line["level"], line["logger"], line["message"]) == (
        {"time", "level", "logger", "message"}, "INFO", "imagegraph.model.cache",
        "model x loaded")
