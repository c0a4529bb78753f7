"""Progress of a long run in the driver's log: objects done of the total, images per second
(`report.images_per_s` since the run started, the figure its summary ends with), time left and
failures, from accumulators the workers add to as their tasks finish."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from pyspark import SparkContext

from imagegraph.logs import in_this_context
from imagegraph.runs.report import images_per_s

log = logging.getLogger(__name__)


class ProgressCounters:
    """Objects processed and objects failed, and the seconds the tasks' models ran and waited
    for reads and decodes, as Spark accumulators (picklable into tasks; a task's additions
    reach the driver when the task ends)."""

    def __init__(self, sc: SparkContext):
        self.processed = sc.accumulator(0)
        self.failed = sc.accumulator(0)
        self.model_ran_s = sc.accumulator(0.0)
        self.model_waited_s = sc.accumulator(0.0)

    def add(self, processed: int, failed: int) -> None:
        self.processed.add(processed)
        self.failed.add(failed)

    def add_model_times(self, ran_s: float, waited_s: float) -> None:
        self.model_ran_s.add(ran_s)
        self.model_waited_s.add(waited_s)


def progress_line(done: int, total: int, failed: int, elapsed_s: float) -> str:
    """`'1200/5000 objects (24.0%), 31.2 images/s, about 2m 2s left, 3 dead-lettered'`, with
    `elapsed_s` seconds since the run started."""
    rate = images_per_s(done, elapsed_s)
    percent = 100.0 * done / total if total else 100.0
    if rate > 0:
        seconds = int((total - done) / rate)
        left = f"about {seconds // 3600}h {seconds % 3600 // 60}m left" if seconds >= 3600 \
            else f"about {seconds // 60}m {seconds % 60}s left"
    else:
        left = "time left unknown"
    return (f"{done}/{total} objects ({percent:.1f}%), {rate:.1f} images/s, {left}, "
            f"{failed} dead-lettered")


class ProgressLogger:
    """A daemon thread logging `progress_line` every `interval_s` seconds until `stop()`;
    `started` is the run's start on `clock` (seconds)."""

    def __init__(self, counters: ProgressCounters, total: int, interval_s: float,
                 started: float, clock: Callable[[], float] = time.monotonic):
        self._counters, self._total, self._interval_s = counters, total, interval_s
        self._clock = clock
        self._started = started
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=in_this_context(self._run),
                                        name="imagegraph-progress", daemon=True)

    def __enter__(self) -> "ProgressLogger":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        self._thread.join()
        self.log()

    def log(self) -> None:
        log.info("progress: %s", progress_line(self._counters.processed.value, self._total,
                                               self._counters.failed.value,
                                               self._clock() - self._started))

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.log()
