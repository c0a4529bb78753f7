"""Step templates: `emr/steps/<name>.json` is one EMR step (Name, ActionOnFailure,
HadoopJarStep running `spark-submit` through command-runner.jar) whose strings hold
`{placeholders}`.

Rendering replaces every `{name}` inside a string with its value. An argument that is exactly
one placeholder whose value is a list is replaced by the list's items (an empty list removes
it): that is how optional spark-submit options and job options enter a step.

The arguments after the entry file (`.../jobs/infer.py`) are the job's own command line;
`parse_job_args` runs them through the job's parser (`imagegraph.cli`), so a step that the job
would reject is refused before anything is sent, and the tests hold every template to it.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from imagegraph.cli import infer_parser, link_parser, train_parser
from imagegraph.errors import JobError

JOB_PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "infer.py": infer_parser, "train.py": train_parser, "link.py": link_parser}
# spark-submit options that take no value; every other option takes one.
SPARK_SUBMIT_FLAGS = frozenset({"--verbose", "--supervise"})
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def load_template(directory: str, name: str) -> dict:
    """The step template `<directory>/<name>.json`."""
    path = Path(directory) / f"{name}.json"
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"step template {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise JobError(f"step template {path} is not valid JSON: {exc}") from None
    if not isinstance(template, dict) or "HadoopJarStep" not in template:
        raise JobError(f"step template {path}: expected an EMR step with a HadoopJarStep")
    return template


def placeholders(template: Any) -> set[str]:
    """The names of the `{placeholders}` anywhere in `template`."""
    return set(_PLACEHOLDER.findall(json.dumps(template)))


def render(template: Any, values: Mapping[str, Any], source: str) -> Any:
    """`template` with its placeholders filled from `values` (see the module docstring);
    `JobError` naming `source` for a placeholder without a value."""
    if isinstance(template, dict):
        return {key: render(value, values, source) for key, value in template.items()}
    if isinstance(template, list):
        rendered: list = []
        for item in template:
            whole = _PLACEHOLDER.fullmatch(item) if isinstance(item, str) else None
            if whole and isinstance(values.get(whole.group(1)), list):
                rendered.extend(str(value) for value in values[whole.group(1)])
            else:
                rendered.append(render(item, values, source))
        return rendered
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda match: _text_value(match.group(1), values, source),
                                template)
    return template


def _text_value(name: str, values: Mapping[str, Any], source: str) -> str:
    if name not in values:
        raise JobError(f"{source}: no value for placeholder {{{name}}}")
    value = values[name]
    if isinstance(value, list):
        raise JobError(f"{source}: list placeholder {{{name}}} must be a whole argument")
    return str(value)


def split_spark_submit(args: list[str]) -> tuple[list[str], str, list[str]]:
    """`['spark-submit', *options, entry, *job_args]` -> `(options, entry, job_args)`."""
    if not args or args[0] != "spark-submit":
        raise JobError(f"a step must run spark-submit, got {args[:1]}")
    index = 1
    while index < len(args) and args[index].startswith("--"):
        option = args[index]
        index += 1 if option in SPARK_SUBMIT_FLAGS or "=" in option else 2
    if index >= len(args):
        raise JobError("the step's spark-submit has no entry file")
    return args[1:index], args[index], args[index + 1:]


def parse_job_args(entry: str, job_args: list[str]) -> argparse.Namespace:
    """Parse `job_args` with the parser of the job that `entry` (`.../jobs/infer.py`) names;
    `JobError` with the parser's own message when it would reject them."""
    name = entry.rsplit("/", 1)[-1]
    if name not in JOB_PARSERS:
        raise JobError(f"step entry {entry} is not one of the jobs ({', '.join(JOB_PARSERS)})")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return JOB_PARSERS[name]().parse_args(job_args)
    except SystemExit:
        lines = stderr.getvalue().strip().splitlines() or [f"{name}: invalid arguments"]
        raise JobError(f"the job would reject the step's arguments: {lines[-1]}") from None


def check_step(step: dict) -> argparse.Namespace:
    """Check a rendered step: command-runner.jar running spark-submit on one of the jobs, with
    arguments its parser accepts; return them parsed."""
    jar_step = step["HadoopJarStep"]
    if jar_step.get("Jar") != "command-runner.jar":
        raise JobError(f"step {step.get('Name')!r}: expected command-runner.jar")
    _, entry, job_args = split_spark_submit(jar_step["Args"])
    try:
        return parse_job_args(entry, job_args)
    except JobError as exc:
        raise JobError(f"step {step.get('Name')!r}: {exc}") from None
