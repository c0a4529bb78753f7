"""Spark work on a background driver thread beside the main thread's.

The main (foreground) thread's jobs run in its scheduler pool (Spark's default) with a job tag;
the background thread's jobs in a pool of their own, so that under the FAIR scheduler
(`spark_session.spark_conf`) neither waits for the other's tasks to drain. Background work runs
one piece at a time, in the order submitted. When a piece fails, the foreground's jobs are
cancelled (those it starts afterwards too, until its work returns) and the foreground raises
that failure, not the cancellation.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from pyspark import InheritableThread, SparkContext

from imagegraph.logs import in_this_context

BACKGROUND_POOL = "imagegraph-background"
CANCEL_INTERVAL_S = 0.2


class BackgroundJobs:
    """A context for one foreground thread and at most one background thread at a time.
    Leaving it waits for the background work, whatever happened in the foreground."""

    def __init__(self, sc: SparkContext, name: str):
        self._sc = sc
        self._foreground_tag = f"{name}-foreground"
        self._thread: InheritableThread | None = None
        self._error: BaseException | None = None
        self._foreground_busy = threading.Event()

    def __enter__(self) -> "BackgroundJobs":
        self._sc.addJobTag(self._foreground_tag)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self._join()
        finally:
            self._sc.removeJobTag(self._foreground_tag)
        if exc_type is None and self._error is not None:
            raise self._error

    def run_in_foreground(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(*args)` on this thread. When it fails because failed background work
        cancelled its jobs, raises the background's failure instead."""
        if self._error is not None:
            raise self._error
        self._foreground_busy.set()
        try:
            return work(*args)
        except BaseException:
            if self._error is None:
                raise
        finally:
            self._foreground_busy.clear()  # ends the background's cancel loop
        self._join()
        raise self._error from None

    def submit(self, work: Callable[..., Any], *args: Any) -> None:
        """Wait for the background work before (raising its failure), then start `work(*args)`
        on the background thread."""
        self._join()
        if self._error is not None:
            raise self._error
        self._thread = InheritableThread(target=in_this_context(self._run), args=(work, args),
                                         name="imagegraph-background")
        self._thread.start()

    def _run(self, work: Callable[..., Any], args: tuple) -> None:
        self._sc.removeJobTag(self._foreground_tag)  # inherited from the foreground thread
        self._sc.setLocalProperty("spark.scheduler.pool", BACKGROUND_POOL)
        try:
            work(*args)
        except BaseException as error:  # handed to the foreground, which raises it
            self._error = error
            while self._foreground_busy.is_set():  # a job it starts after one cancel, too
                self._sc.cancelJobsWithTag(self._foreground_tag)
                time.sleep(CANCEL_INTERVAL_S)

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
