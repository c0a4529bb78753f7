"""How the workers' reader maps S3's error answers, over HTTP: dev/s3_fault_proxy.py answers
chosen keys with S3's status and XML error body (nothing behind it is reached), and
`read_object` must raise the documented `ObjectUnreadable`, whose reason has the documented
retry class, after exactly the documented tries."""
from __future__ import annotations

import pytest
from s3_fault_proxy import S3FaultProxy

from imagegraph.dead_letters import REFUSED, TRANSIENT, retry_class
from imagegraph.storage.object_reader import ObjectUnreadable, ReaderSettings, read_object

UNREACHABLE = "http://127.0.0.1:9"  # the proxy answers every chosen key itself


@pytest.mark.parametrize("fault, reason, cls, tries", [
    (404, "object not found", REFUSED, 1),
    (403, "access denied", REFUSED, 1),
    ("InvalidObjectState", "object archived (InvalidObjectState): restore it to read it",
     REFUSED, 1),
    (503, "read failed: SlowDown", TRANSIENT, 2),
    (500, "read failed: InternalError", TRANSIENT, 2),
])
def test_error_answers_become_dead_letter_reasons(fault, reason, cls, tries):
    with S3FaultProxy(UNREACHABLE, key_statuses={"/b/in/k.png": fault}) as proxy:
        settings = ReaderSettings(endpoint=proxy.endpoint, region="us-east-1",
                                  path_style_access=True, max_attempts=2, threads=1,
                                  max_bytes=1000, access_key="a", secret_key="b")
        with pytest.raises(ObjectUnreadable) as raised:
            read_object("s3://b/in/k.png", None, settings)
    assert (raised.value.reason, retry_class(raised.value.reason)) == (reason, cls)
    assert proxy.gets == {"/b/in/k.png": tries}  # s3.max_attempts counts tries, not retries
