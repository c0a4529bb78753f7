"""pytest imports test modules by their base name (no packages under tests/), so a unit and an
integration module of one name break the whole run's collection."""
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name():
    names = [path.name for path in TESTS.rglob("test_*.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []
