"""Why an object was dead-lettered, and whether and how often `--resume` tries it again.

Every dead-letter reason belongs to one retry class, by the start of its text (`REASONS`); each
class has a meaning and an attempt cap (`max_attempts`). An attempt is a run that dead-lettered
the object (the same URI and ETag, for the same model); `--resume` skips an object whose
attempts reached the cap of its latest dead letter's class, so a backfill holds at most that
many dead-letter rows per object version and model.
"""
from __future__ import annotations

FINAL = "final"
TRANSIENT = "transient"
REFUSED = "refused"

RETRY_CLASSES: dict[str, str] = {
    FINAL: "the object's bytes can never be classified (empty, corrupt, not an image, a format "
           "this job does not read, over the byte or pixel limit) or its URI cannot be read: "
           "one attempt, never tried again",
    TRANSIENT: "a service failed for a while (S3 errors and throttling that outlasted "
               "s3.max_attempts, the object overwritten since it was listed, the decoder out "
               "of memory, graph writes whose retries were spent): tried again by --resume, "
               "up to inference.max_attempts attempts",
    REFUSED: "something outside the object's bytes refused it and may be fixed (access denied "
             "by IAM, a bucket policy or KMS; not found, e.g. deleted or a read racing a "
             "re-upload; archived in a Glacier storage class or tier until restored; the "
             "graph refusing its row, for its data or for what the graph holds): tried again "
             "by --resume, up to inference.max_attempts attempts",
}
"""Each retry class and what it means."""

REASONS: tuple[tuple[str, str], ...] = (
    ("empty object", FINAL),
    ("object is ", FINAL),  # object is N bytes, over the limit of N
    ("image is ", FINAL),  # image is WxH pixels, over the limit of N pixels
    ("unreadable image header", FINAL),
    ("corrupt or truncated ", FINAL),
    ("not an image", FINAL),
    ("unrecognised image format", FINAL),
    ("unreadable URI scheme", FINAL),
    ("read failed", TRANSIENT),
    ("object changed since listed", TRANSIENT),
    ("out of memory while decoding", TRANSIENT),
    ("graph write failed", TRANSIENT),
    ("graph bulk load: not in the graph as loaded", TRANSIENT),  # read back after a load
    ("object not found", REFUSED),
    ("access denied", REFUSED),
    ("object archived", REFUSED),
    ("graph refused the write", REFUSED),
    ("graph bulk load rejected the record", REFUSED),
)
"""(start of a reason, its retry class), for every reason the job writes; see `retry_class`."""


def retry_class(reason: str) -> str:
    """The retry class of a dead-letter `reason`: that of the `REASONS` entry it starts with;
    `TRANSIENT` for any other (tried again, a bounded number of times)."""
    return next((cls for start, cls in REASONS if reason.startswith(start)), TRANSIENT)


def max_attempts(cls: str, configured: int) -> int:
    """How many attempts an object whose latest dead letter is of retry class `cls` gets:
    1 for `FINAL`, else `configured` (`inference.max_attempts`)."""
    return 1 if cls == FINAL else configured
