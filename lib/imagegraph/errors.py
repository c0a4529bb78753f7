"""The one exception type that stops a job with a clear message instead of a traceback, and the
cluster failures that are explained in one line rather than as a crash."""
from __future__ import annotations

import re


class JobError(Exception):
    """Bad configuration, arguments or inputs, found before or during a run.

    The message names what is wrong and where; the jobs print it on one line and exit with 2.
    """


# Spark's YarnAllocator words an executor container that YARN's NodeManager killed for memory as
# "Container killed by YARN for exceeding physical memory limits. 1.1 GB of 1 GB physical memory
# used. Consider boosting spark.executor.memoryOverhead." inside the failed job's stack trace.
_KILLED_FOR_MEMORY = re.compile(
    r"Container killed by YARN for exceeding (physical|virtual) memory limits\.\s*"
    r"(?:([0-9.]+ [KMGT]?B of [0-9.]+ [KMGT]?B (?:physical|virtual) memory used))?")


def cluster_failure(error: BaseException) -> str | None:
    """One line for a failure of the cluster under the job that the user can act on (an executor
    killed by YARN for its memory), or None when `error` is not one."""
    killed = _KILLED_FOR_MEMORY.search(str(error))
    if killed is None:
        return None
    used = f" ({killed.group(2)})" if killed.group(2) else ""
    return (f"YARN killed a Spark executor for exceeding its container's {killed.group(1)} "
            f"memory limit{used}; the Python workers' memory counts in "
            "spark.executor.memoryOverhead: raise it, or lower inference.batch_size")
