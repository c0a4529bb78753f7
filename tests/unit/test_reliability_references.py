"""Every test docs/RELIABILITY.md names beside a case exists: each `unit/...` or
`integration/...` file, and each `::test_name` in it (`...::name` and `...[id]` refer to the file
named last)."""
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
RELIABILITY = TESTS.parent / "docs" / "RELIABILITY.md"
REFERENCE = re.compile(r"`((?:unit|integration)/test_\w+\.py|\.\.\.)(?:::(\w+))?(?:\[[^`]*\])?`")


def references() -> list[tuple[str, str | None]]:
    """(file under tests/, test function or None) of each reference, in the page's order."""
    found, last = [], None
    for match in REFERENCE.finditer(RELIABILITY.read_text()):
        path, name = match.groups()
        last = last if path == "..." else path
        found.append((last, name))
    return found


def test_every_test_named_in_reliability_md_exists():
    named = references()
    assert len(named) > 100
    assert named[0][0] is not None
    assert [(path, name) for path, name in named if not (TESTS / path).is_file() or (
        name and not re.search(rf"^def {name}\(", (TESTS / path).read_text(), re.M))] == []
