"""Every dead-letter reason the job writes has a documented retry class and an attempt cap
(`imagegraph.dead_letters`)."""
from __future__ import annotations

import ast
from pathlib import Path

import bad_images
import pytest

from imagegraph.dead_letters import (
    FINAL,
    REASONS,
    REFUSED,
    RETRY_CLASSES,
    TRANSIENT,
    max_attempts,
    retry_class,
)
from imagegraph.graph.bulk_load import rejection_reason
from imagegraph.imaging.decode import oversize_reason, unrecognised_reason
from imagegraph.storage.object_reader import (
    ARCHIVED,
    CHANGED_SINCE_LISTED,
    ObjectUnreadable,
    ReaderSettings,
    read_object,
)

LIB = Path(__file__).resolve().parents[2] / "lib" / "imagegraph"
REASON_EXCEPTIONS = {"ObjectUnreadable", "UndecodableImage", "DecoderOutOfMemory"}


def test_every_class_has_a_meaning_and_a_cap():
    assert {cls for _, cls in REASONS} == set(RETRY_CLASSES) == {FINAL, TRANSIENT, REFUSED}
    assert {cls: max_attempts(cls, 5) for cls in RETRY_CLASSES} == {
        FINAL: 1, TRANSIENT: 5, REFUSED: 5}


def test_no_reason_start_hides_another():
    """Each reason has the class of the one entry it starts with: no entry starts another."""
    starts = [start for start, _ in REASONS]
    assert [(a, b) for a in starts for b in starts if a != b and b.startswith(a)] == []


def test_every_dead_letter_of_the_bad_input_corpus_is_final():
    """The corpus's bad bytes (dev/bad_images.py) never become readable by trying again."""
    reasons = {case.expected.reason for case in bad_images.corpus(100_000, 1_000_000)
               if isinstance(case.expected, bad_images.DeadLettered)}
    assert len(reasons) == 9
    assert {reason: retry_class(reason) for reason in reasons} == {
        reason: FINAL for reason in reasons}


def unreadable_scheme_reason() -> str:
    with pytest.raises(ObjectUnreadable) as raised:
        read_object("hdfs://namenode/in/a.png", None, ReaderSettings(
            endpoint="", region="us-east-1", path_style_access=True, max_attempts=1,
            threads=1, max_bytes=1000))
    return raised.value.reason


@pytest.mark.parametrize("reason, cls", [
    (oversize_reason(2000, 1000), FINAL),
    (unrecognised_reason(b"\x00\x01binary"), FINAL),
    ("image is 100000x100000 pixels, over the limit of 89478485 pixels", FINAL),
    ("corrupt or truncated HEIF data: ValueError: bad", FINAL),
    ("unreadable image header: OSError: Truncated File Read", FINAL),
    ("read failed: SlowDown", TRANSIENT),
    ("read failed: ConnectTimeoutError: Connect timeout on endpoint URL", TRANSIENT),
    (CHANGED_SINCE_LISTED, TRANSIENT),
    ("out of memory while decoding: MemoryError: ", TRANSIENT),
    ("graph write failed: InternalFailureException: x (after 8 attempt(s))", TRANSIENT),
    ("graph write failed: stale classified_as edges not dropped: x", TRANSIENT),
    ("graph bulk load: not in the graph as loaded, and no loader error named it: no image "
     "vertex", TRANSIENT),
    ("object not found", REFUSED),
    ("access denied", REFUSED),
    (ARCHIVED, REFUSED),
    ("graph refused the write: MalformedQueryException: x (after 1 attempt(s))", REFUSED),
    (rejection_reason({"errorCode": "PARSING_ERROR", "errorMessage": "bad Double",
                       "fileName": "edges.csv", "recordNum": 3}), REFUSED),
])
def test_each_reason_has_its_class(reason, cls):
    """By an entry of its own in the table: a transient reason left out of it would still be
    transient by the fallback, but undocumented."""
    assert retry_class(reason) == cls
    assert [entry for start, entry in REASONS if reason.startswith(start)] == [cls]


def test_a_uri_of_another_scheme_is_final():
    reason = unreadable_scheme_reason()
    assert reason == "unreadable URI scheme: hdfs (this job reads s3:// and file://)"
    assert retry_class(reason) == FINAL


def test_an_unknown_reason_is_transient_so_tried_a_bounded_number_of_times():
    assert retry_class("something new: went wrong") == TRANSIENT


def literal_starts() -> list[tuple[str, str]]:
    """(file:line, the literal text a reason begins with) of every `ObjectUnreadable`,
    `UndecodableImage` and `DecoderOutOfMemory` raised in lib/ with a string or f-string."""
    found = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in REASON_EXCEPTIONS and node.args):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and arg.values:
                arg = arg.values[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((f"{path.name}:{node.lineno}", arg.value))
    return found


def test_every_reason_raised_with_a_literal_starts_as_an_entry_of_the_table():
    starts = literal_starts()
    assert len(starts) >= 10
    assert [(where, text) for where, text in starts
            if not any(text.startswith(start) for start, _ in REASONS)] == []
