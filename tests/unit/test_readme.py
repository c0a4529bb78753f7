"""The README's commands after the demo are the ones the demo runs (dev/demo.py EXPLORE)."""
from pathlib import Path

import demo

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_shows_the_commands_the_demo_runs_after_it():
    block = README.split("### After the demo", 1)[1].split("```")[1].strip().splitlines()
    assert block == [*demo.EXPLORE, "make services-down"]
