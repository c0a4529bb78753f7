"""Peak resident memory of Spark's Python workers on this machine (Linux's /proc).

PySpark forks its Python workers from `pyspark.daemon`, and with `spark.python.worker.reuse`
(the default) they outlive a task, so their high-water marks (`VmHWM`) after a job are the
most each held during it. `reset_peaks` starts the marks again from the current use (writing
5 to `clear_refs`, Linux 4.0 and later), so one variant's peak is not an earlier one's.
"""
from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def python_workers() -> list[Path]:
    """The /proc directories of this machine's PySpark daemons and workers."""
    found = []
    for process in PROC.iterdir():
        try:
            if process.name.isdigit() and b"pyspark.daemon" in (process / "cmdline").read_bytes():
                found.append(process)
        except OSError:  # ended while listed, or not ours
            continue
    return found


def reset_peaks() -> None:
    """Start every Python worker's high-water mark again from its current resident memory."""
    for process in python_workers():
        try:
            (process / "clear_refs").write_text("5")
        except OSError:
            continue


def peak_mib() -> float | None:
    """The largest high-water mark of resident memory among the Python workers, MiB; None
    when there is none (no Spark job ran, or not Linux)."""
    peaks = []
    for process in python_workers():
        try:
            status = (process / "status").read_text()
        except OSError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines()
                  if line.startswith("VmHWM:")]
    return round(max(peaks), 1) if peaks else None
