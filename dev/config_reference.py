"""docs/CONFIG_REFERENCE.md from the configuration's own fields: every section of the jobs'
configuration (`imagegraph.config.Config`) and of the EMR launcher's settings
(`imagegraph.emr.settings.LauncherSettings`), each key with its type, default and constraint.

    .venv/bin/python dev/config_reference.py          # rewrite the page
    .venv/bin/python dev/config_reference.py --check  # exit 1 when the page is stale

tests/unit/test_config_reference.py fails when the page differs from what this writes.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import typing
from pathlib import Path

from imagegraph.config import Config
from imagegraph.emr.settings import LauncherSettings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "CONFIG_REFERENCE.md"


def _type_name(declared: typing.Any) -> str:
    return getattr(declared, "__name__", str(declared)) if not typing.get_args(declared) \
        else str(declared)


def _section_lines(name: str, section: type) -> list[str]:
    hints = typing.get_type_hints(section)
    doc = " ".join(inspect.getdoc(section).split()) if inspect.getdoc(section) else ""
    lines = [f"### `{name}`", "", doc, "", "| key | type | default | allowed |",
             "| --- | --- | --- | --- |"]
    instance = section()
    for field in dataclasses.fields(section):
        check = field.metadata.get("check")
        default = getattr(instance, field.name)
        shown = f"`{default!r}`" if default != "" else "empty"
        lines.append(f"| `{name}.{field.name}` | {_type_name(hints[field.name])} | {shown} | "
                     f"{check.rule if check else ''} |")
    return lines + [""]


def reference() -> str:
    """The page's text."""
    lines = ["# Configuration reference", "",
             "Generated from the configuration's fields by `dev/config_reference.py`; do not "
             "edit by hand. How files, `${VAR}`, `--set` and flags combine: "
             "[CONFIGURATION.md](CONFIGURATION.md).", ""]
    for title, root in (("The jobs' configuration (`--config`, conf/*.yaml)", Config),
                        ("The EMR launcher's settings (emr/launcher.yaml)", LauncherSettings)):
        lines += [f"## {title}", ""]
        hints = typing.get_type_hints(root)
        for field in dataclasses.fields(root):
            lines += _section_lines(field.name, hints[field.name])
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the page differs from the fields, write nothing")
    args = parser.parse_args()
    text = reference()
    if args.check:
        stale = PAGE.read_text() != text
        if stale:
            print(f"{PAGE} is stale: run .venv/bin/python dev/config_reference.py",
                  file=sys.stderr)
        return int(stale)
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
