"""The one exception type that stops a job with a clear message instead of a traceback."""


class JobError(Exception):
    """Bad configuration, arguments or inputs, found before or during a run.

    The message names what is wrong and where; the jobs print it on one line and exit with 2.
    """
