"""The console scripts of setup.py, read from setup.py itself (the shared venv is not
reinstalled by tests): each names a main function that answers `--help` under the script's
own name, and each spark-submit entry file calls the main of its console script."""
import ast
import importlib
import sys
from pathlib import Path

import pytest

from imagegraph.cli import infer_parser
from imagegraph.infer.command import next_command

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {"imagegraph-train", "imagegraph-infer", "imagegraph-link", "imagegraph-query",
            "imagegraph-status", "imagegraph-emr"}


def console_scripts() -> dict[str, str]:
    """name -> 'module:function', from setup()'s entry_points in setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    setup_call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                      and getattr(node.func, "id", "") == "setup")
    entry_points = next(ast.literal_eval(keyword.value) for keyword in setup_call.keywords
                        if keyword.arg == "entry_points")
    return dict((part.strip() for part in line.split("="))
                for line in entry_points["console_scripts"])


def target(spec: str):
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def test_every_command_has_a_console_script():
    assert set(console_scripts()) == COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_console_script_answers_help_under_its_own_name(monkeypatch, capsys, name):
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/{name}", "--help"])
    with pytest.raises(SystemExit) as stop:
        target(console_scripts()[name])()
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name} ")


@pytest.mark.parametrize("job", ["train", "infer", "link"])
def test_each_job_file_calls_its_console_scripts_main(monkeypatch, capsys, job):
    source = (ROOT / "jobs" / f"{job}.py").read_text()
    imported = [f"{node.module}:{alias.name}" for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom) for alias in node.names]
    assert imported == [console_scripts()[f"imagegraph-{job}"]]
    # under spark-submit the same main is named after the file
    monkeypatch.setattr(sys, "argv", [f"jobs/{job}.py", "--help"])
    with pytest.raises(SystemExit):
        target(imported[0])()
    assert capsys.readouterr().out.startswith(f"usage: {job}.py ")


def test_a_console_scripts_error_line_names_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", [
        "imagegraph-infer", "--config", str(tmp_path / "none.yaml"), "--input", "s3a://b/in/",
        "--model", "s3a://b/m", "--output", "s3a://b/out"])
    assert target(console_scripts()["imagegraph-infer"])() == 2
    assert capsys.readouterr().err == (f"imagegraph-infer: error: config file "
                                       f"{tmp_path / 'none.yaml'} does not exist\n")


INFER = ["--input", "s3a://b/in/", "--model", "s3a://b/m", "--output", "s3a://b/out"]


@pytest.mark.parametrize("argv, prog, graph, command", [
    (["--config", "conf/local.yaml", *INFER], "infer.py", True,
     "python -m imagegraph.graph.query --config conf/local.yaml run r1"),
    (["--config", "conf/local.yaml", *INFER], "imagegraph-infer", True,
     "imagegraph-query --config conf/local.yaml run r1"),
    ([*INFER, "--gremlin-endpoint", "wss://n:8182/gremlin", "--set", "graph.iam_auth=off",
      "--set", "inference.top_k=5", "--set", "graph.region=eu west"], "imagegraph-infer", True,
     "imagegraph-query --gremlin-endpoint wss://n:8182/gremlin --set graph.iam_auth=off "
     "--set 'graph.region=eu west' run r1"),
    (["--config", "conf/emr.yaml", *INFER, "--no-graph"], "infer.py", False,
     "python -m imagegraph.runs.status --config conf/emr.yaml --output s3a://b/out"),
    ([*INFER, "--no-graph"], "imagegraph-infer", False,
     "imagegraph-status --output s3a://b/out"),
], ids=["spark-submit", "console script", "graph options only", "graph off", "graph off, "
        "console script"])
def test_the_summary_ends_with_the_command_to_run_next(argv, prog, graph, command):
    assert next_command(infer_parser().parse_args(argv), prog, "r1", graph) == command
