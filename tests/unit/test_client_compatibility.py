"""The Gremlin client stays inside Neptune's client compatibility table (Neptune's user guide,
"Java-based Gremlin clients": engines 1.3.2.0 and later support TinkerPop clients 3.7.1 to
3.7.3), and the local Gremlin Server speaks the client's TinkerPop 3.7 (its 3.7.5: see the
pom)."""
from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEPTUNE_SUPPORTED = {"3.7.1", "3.7.2", "3.7.3"}


def _pinned(name: str, requirements: str) -> str:
    return re.search(rf"^{name}==(\S+)$", (ROOT / requirements).read_text(), re.M).group(1)


def test_the_pinned_and_installed_gremlinpython_is_one_neptune_supports():
    assert _pinned("gremlinpython", "requirements.txt") in NEPTUNE_SUPPORTED
    assert _pinned("gremlinpython", "constraints.txt") == _pinned("gremlinpython",
                                                                   "requirements.txt")
    assert version("gremlinpython") == _pinned("gremlinpython", "requirements.txt")


def test_the_local_gremlin_server_runs_the_clients_tinkerpop_line():
    pom = (ROOT / "dev/maven/gremlin-server/pom.xml").read_text()
    server = re.search(r"<tinkerpop.version>(.+)</tinkerpop.version>", pom).group(1)
    client = _pinned("gremlinpython", "requirements.txt")
    assert server.split(".")[:2] == client.split(".")[:2] == ["3", "7"]
