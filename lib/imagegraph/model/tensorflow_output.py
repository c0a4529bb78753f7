"""TensorFlow's own output kept out of the job's logs and temporary directory, on the driver
and in every Python worker.

A TensorFlow Lite conversion of a Keras model exports it first, and Keras prints the export:
every endpoint and every captured tensor (`Captures:` and a `TensorSpec(...)` line per
variable, hundreds for a real model, in every worker that converts). TensorFlow's MLIR
converter and TensorFlow Lite's interpreter write absl log lines (`W1201 12:00:00.000000 ...
file.cc:365] Ignored output_format.`), absl's note that it was not initialized, and the
`Created TensorFlow Lite XNNPACK delegate` banner straight to file descriptor 2, which neither
Python's logging nor TF_CPP_MIN_LOG_LEVEL reaches.

`quiet_tensorflow()` wraps a model's loading: its conversion, the interpreter's creation and
its first run (where TensorFlow Lite applies the XNNPACK delegate and says so). Within it Keras
prints nothing (its interactive logging is off for the calling thread), and what anything
writes to file descriptor 2 meanwhile is captured, then written back without those INFO and
WARNING lines and banners. Everything else (an ERROR or FATAL line, a traceback, another
thread's log record) is written back as it came, only later.

AutoGraph writes the Python source of each function it converts to a file in the temporary
directory (`__autograph_generated_file*.py`), imports it, and deletes it only when the
interpreter exits normally, which Spark's Python workers never do (they end with `os._exit` or
a signal), nor a killed driver: every worker that loaded a model left 3 to 5 of them behind.
`remove_autograph_sources()` deletes those already imported; `quiet_tensorflow()` calls it at
its end, and training at the end of each worker's training.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

# absl's line prefix (I or W, month and day, time, thread, file:line]; `I0000 00:00:<epoch
# seconds>` before absl is initialized), absl's note about that, TensorFlow Lite's banner.
_NOISE = re.compile(r"^(?:[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
                    r"|WARNING: All log messages before absl::InitializeLog\(\) "
                    r"|INFO: Created TensorFlow Lite XNNPACK delegate )")


AUTOGRAPH_MODULE_PREFIX = "__autograph_generated_file"
"""How AutoGraph's generated modules, and their files, are named."""


def remove_autograph_sources() -> None:
    """Delete the files of AutoGraph's generated modules imported in this process (only
    imported ones: another thread may be writing one to import it). The converted functions
    stay loaded; a traceback through them shows no source lines."""
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) if name.startswith(AUTOGRAPH_MODULE_PREFIX) \
            else None
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def without_noise(text: str) -> str:
    """`text` (what was written to stderr) without TensorFlow's INFO and WARNING lines and
    banners."""
    return "".join(line for line in text.splitlines(keepends=True) if not _NOISE.match(line))


@contextlib.contextmanager
def quiet_tensorflow():
    """Within the block: no Keras printing in this thread, and file descriptor 2 captured and
    written back through `without_noise` at the end (also when the block raises), then
    AutoGraph's files removed (`remove_autograph_sources`). TensorFlow's
    start-up banners are its INFO lines: off (TF_CPP_MIN_LOG_LEVEL 1, unless set) when this
    first imports it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import keras

    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if interactive:
                keras.config.enable_interactive_logging()
            captured.seek(0)
            kept = without_noise(captured.read().decode("utf-8", errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
            remove_autograph_sources()
