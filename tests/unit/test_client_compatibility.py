"""The Gremlin client stays inside Neptune's client compatibility table (Neptune's user guide,
"Java-based Gremlin clients": engines 1.3.2.0 and later support TinkerPop clients 3.7.1 to
3.7.3), the minimum engine the README and requirements.txt state is the earliest whose row of
that table takes the pinned client, and the local Gremlin Server speaks the client's TinkerPop
3.7 (its 3.7.5: see the pom)."""
from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEPTUNE_SUPPORTED = {"3.7.1", "3.7.2", "3.7.3"}
ENGINE_CLIENTS = (  # Neptune engine (from), earliest and latest TinkerPop client it supports
    ("1.3.2.0", "3.7.1", "3.7.3"), ("1.3.1.0", "3.6.2", "3.6.5"), ("1.3.0.0", "3.6.2", "3.6.4"),
    ("1.2.1.0", "3.6.2", "3.6.2"), ("1.1.1.0", "3.5.5", "3.5.6"), ("1.1.0.0", "3.4.0", "3.4.13"))


def _numbers(version_text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version_text.split("."))


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


def test_the_minimum_engine_stated_is_the_earliest_that_supports_the_pinned_client():
    client = _numbers(_pinned("gremlinpython", "requirements.txt"))
    minimum = min((engine for engine, low, high in ENGINE_CLIENTS
                   if _numbers(low) <= client <= _numbers(high)), key=_numbers)
    assert minimum == "1.3.2.0"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"(so the minimum engine is {minimum})" in readme
    assert f"engines {minimum} and later take TinkerPop clients" in \
        (ROOT / "requirements.txt").read_text()
