"""Typed settings in YAML sections, shared by the jobs' configuration (`imagegraph.config`) and
the EMR launcher's settings (`imagegraph.emr.settings`): each section is a frozen dataclass,
each field a setting whose constraint is declared beside it (`setting(default, check)`).

`load_sections` reads a YAML file with `${VAR}` and `${VAR:-default}` from the environment
(`read_yaml`: a `${VAR}` without a default whose variable is not set stops it, naming the file,
each key and variable), applies `SECTION.KEY=VALUE` overrides and checks every key: unknown keys
(with the closest known one), wrong types and values their check refuses raise one `JobError`
naming the file, or the command line when an override is wrong, and each dotted key, a line
each.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import yaml

from imagegraph.errors import JobError

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
COMMAND_LINE = "command line"
"""The source named in errors of `--set` overrides and dedicated flags."""


@dataclass(frozen=True)
class Check:
    """A setting's constraint: `test(value)` holds for allowed values; errors say
    `must be <rule>, got <value>`."""

    rule: str
    test: Callable[[Any], bool]


def positive() -> Check:
    return Check("greater than 0", lambda value: value > 0)


def at_least(minimum: float, wording: str = "") -> Check:
    """`wording` in place of 'at least <minimum>', e.g. '0 (automatic) or more'."""
    return Check(wording or f"at least {minimum}", lambda value: value >= minimum)


def between(low: float, high: float, unit: str = "") -> Check:
    """Inclusive bounds; `unit` follows them in the rule, e.g. ' bits'."""
    return Check(f"between {low} and {high}{unit}", lambda value: low <= value <= high)


def one_of(*choices: Any) -> Check:
    return Check(f"one of {', '.join(map(str, choices))}", lambda value: value in choices)


def iso_time() -> Check:
    """An ISO-8601 time, or empty for no bound."""
    return Check("an ISO-8601 time such as 2026-01-31T00:00:00Z",
                 lambda value: not value or _parses_as_time(value))


def list_of_strings() -> Check:
    return Check("a list of strings",
                 lambda value: all(isinstance(item, str) for item in value))


def setting(default: Any, check: Check | None = None) -> Any:
    """A dataclass field with `default` (a list or dict is copied per instance) and `check`."""
    metadata = {"check": check} if check else {}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default),
                                 metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_of(cls: type, name: str) -> Check | None:
    """The check declared on the field `name` of the section `cls`."""
    return next(f.metadata.get("check") for f in dataclasses.fields(cls) if f.name == name)


def parse_time(text: str) -> datetime:
    """An ISO-8601 time as an aware UTC datetime; a time without zone is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _parses_as_time(text: str) -> bool:
    try:
        parse_time(text)
    except ValueError:
        return False
    return True


def expand_environment(text: str, environ: typing.Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}` in `text`; an unset `${VAR}` becomes ''."""
    environ = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        value = environ.get(match.group(1))
        if value in (None, "") and match.group(2) is not None:
            return match.group(2)
        return value or ""

    return _ENV_REFERENCE.sub(replace, text)


def _unset(match: re.Match[str], environ: typing.Mapping[str, str]) -> bool:
    """Whether the reference `match` has no default and names a variable not set."""
    return match.group(2) is None and match.group(1) not in environ


def _scalars(raw: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, text) of every string under the mapping `raw`, list items included."""
    if isinstance(raw, dict):
        return [pair for key, value in raw.items() for pair in _scalars(value, f"{prefix}{key}.")]
    if isinstance(raw, list):
        return [pair for item in raw for pair in _scalars(item, prefix)]
    return [(prefix.rstrip("."), raw)] if isinstance(raw, str) else []


def _raw_values(text: str) -> list[tuple[str, str]] | None:
    """(dotted key, text as written) of the YAML `text` before `${VAR}` is expanded; None when
    it is not valid YAML as written."""
    try:
        return _scalars(yaml.safe_load(text))
    except yaml.YAMLError:
        return None


def unset_references(text: str, environ: typing.Mapping[str, str] | None = None) -> list[str]:
    """`'graph.endpoint is ${NEPTUNE_URL}, which is not set'` for each value of the YAML `text`
    naming a variable without a default that `environ` (default: the process's) lacks; `'line
    N has ${VAR}, ...'` where the text is not valid YAML before expansion."""
    environ = os.environ if environ is None else environ
    values = _raw_values(text)
    if values is None:
        values = [(f"line {number}", line.split(" #")[0].strip()) for number, line
                  in enumerate(text.splitlines(), start=1) if not line.lstrip().startswith("#")]
    found = []
    for key, value in values:
        names = [m.group(1) for m in _ENV_REFERENCE.finditer(value) if _unset(m, environ)]
        if not names:
            continue
        verb = "is" if key[:5] != "line " else "has"
        found.append(f"{key} {verb} {value}, which is not set" if value == f"${{{names[0]}}}"
                     else f"{key} {verb} {value}, and {', '.join(names)} "
                          f"{'is' if len(names) == 1 else 'are'} not set")
    return found


def variables_by_key(path: str) -> dict[str, list[str]]:
    """The environment variables each dotted key's value names in the YAML file `path`, as
    written (`${VAR}` or `${VAR:-default}`); empty when the file cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            values = _raw_values(handle.read())
    except OSError:
        return {}
    return {key: names for key, value in values or []
            if (names := [m.group(1) for m in _ENV_REFERENCE.finditer(value)])}


def read_yaml(path: str, kind: str) -> Any:
    """The YAML file `path` (`kind` names it in errors) with `${VAR}` and `${VAR:-default}`
    expanded; `JobError` when it cannot be read or parsed, or names a variable without a
    default that is not set (every such key and variable in one message)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise JobError(f"{kind} {path} does not exist") from None
    except IsADirectoryError:
        raise JobError(f"{kind} {path} is a directory: name a YAML file") from None
    except OSError as exc:
        raise JobError(f"{kind} {path} cannot be read: {exc.strerror}") from None
    unset = unset_references(text)
    if unset:
        raise JobError(f"{path}: {'; '.join(unset)} (export the variable, or give it a "
                       "default in the file: ${VAR:-default})")
    try:
        return yaml.safe_load(expand_environment(text))
    except yaml.YAMLError as exc:
        raise JobError(f"{kind} {path} is not valid YAML: {exc}") from None


def parse_override(assignment: str) -> tuple[str, Any]:
    """`'graph.rows_per_flush=200'` -> `('graph.rows_per_flush', 200)`; the value is read as YAML,
    or kept as the string it is where it is not valid YAML (`input.glob=*.jpg`)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise JobError(f"--set {assignment!r}: expected SECTION.KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def command_line_overrides(args: argparse.Namespace,
                           flag_keys: typing.Mapping[str, str]) -> dict[str, Any]:
    """The dotted-key overrides of a command line: `args.overrides` (the `--set` assignments,
    in order), then each flag of `flag_keys` (argparse dest -> dotted key) that `args` holds a
    value for (not None), which wins over a `--set` of the same key."""
    overrides = dict(parse_override(item) for item in args.overrides)
    for flag, key in flag_keys.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    return overrides


def load_sections(cls: type, path: str | None, overrides: dict[str, Any] | None,
                  kind: str) -> Any:
    """An instance of the sectioned dataclass `cls` from the YAML file `path` (`kind` names it
    in errors; None means built-in defaults) with `${VAR}` expanded, then dotted-key
    `overrides` applied, every key checked (`build_section`). Errors name the file when the
    file alone is wrong, else the command line (`--set` or a flag)."""
    raw: dict[str, Any] = {}
    source = path or "<defaults>"
    if path:
        raw = read_yaml(path, kind) or {}
        if not isinstance(raw, dict):
            raise JobError(f"{kind} {path}: expected a mapping of sections at the top")
    if not overrides:
        return build_section(cls, raw, source, prefix="")
    build_section(cls, copy.deepcopy(raw), source, prefix="")
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if not key:
            raise JobError(f"override {dotted!r}: expected SECTION.KEY")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise JobError(f"{COMMAND_LINE}: {section} must be a mapping")
        name, _, entry = key.partition(".")
        if entry and _is_mapping(cls, section, name):
            # a mapping's entry: spark.conf.spark.ui.enabled=true sets spark.conf's key
            raw[section][name] = {**(raw[section].get(name) or {}), entry: value}
        else:
            raw[section][key] = value
    return build_section(cls, raw, COMMAND_LINE, prefix="")


def _is_mapping(cls: type, section: str, name: str) -> bool:
    """Whether `cls`'s section `section` declares `name` as a dict."""
    section_type = typing.get_type_hints(cls).get(section)
    if not (isinstance(section_type, type) and dataclasses.is_dataclass(section_type)):
        return False
    declared = typing.get_type_hints(section_type).get(name)
    return declared is dict or typing.get_origin(declared) is dict


def build_section(cls: type, raw: Any, source: str, prefix: str) -> Any:
    """An instance of the dataclass `cls` from the mapping `raw`, every key checked (unknown
    keys, types, each field's check); errors name `source` and the dotted key under
    `prefix`, every wrong key in one `JobError`, a line each."""
    if not isinstance(raw, dict):
        raise JobError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems = []
    for name in sorted(set(raw) - set(fields)):
        close = difflib.get_close_matches(name, fields, n=1)
        hint = (f"did you mean {prefix}{close[0]}?" if close
                else f"known in this section: {', '.join(sorted(fields))}")
        problems.append(f"{source}: unknown key {prefix}{name} ({hint})")
    values = {}
    for name, value in raw.items():
        if name not in fields:
            continue
        dotted = prefix + name
        expected = hints[name]
        try:
            if isinstance(expected, type) and dataclasses.is_dataclass(expected):
                values[name] = build_section(expected, value, source, dotted + ".")
            else:
                values[name] = _checked(dotted, expected, value, source,
                                        fields[name].metadata.get("check"))
        except JobError as wrong:
            problems.append(str(wrong))
    if problems:
        raise JobError("\n".join(problems))
    return cls(**values)


def _checked(dotted: str, expected: Any, value: Any, source: str, check: Check | None) -> Any:
    """`value` converted to the declared type where YAML reads it otherwise, then its type and
    `check` enforced."""
    if value is None:
        raise JobError(f"{source}: {dotted} has no value")
    declared = typing.get_origin(expected) or expected
    if declared is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if declared is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if declared is str and isinstance(value, bool) and check and check.test("on"):
        value = "on" if value else "off"  # YAML 1.1 reads on/off as booleans
    if not isinstance(value, declared) or (declared is int and isinstance(value, bool)):
        raise JobError(f"{source}: {dotted} must be {declared.__name__}, "
                       f"got {type(value).__name__} {value!r}")
    if check and not check.test(value):
        raise JobError(f"{source}: {dotted} must be {check.rule}, got {value!r}")
    return value
