"""emr/bootstrap.sh's command line, as the launcher calls it (imagegraph.emr.requests
.bootstrap_args): run for real with bash, on this machine's Python as the nodes' interpreter.
The modes that copy from S3 (unpack, install) need the AWS CLI and a node; they are not run
here."""
import subprocess
import sys
from pathlib import Path

import pytest

from imagegraph.emr.requests import bootstrap_args
from imagegraph.emr.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "emr" / "bootstrap.sh"


def bootstrap(*args):
    return subprocess.run(["bash", str(BOOTSTRAP), *args], capture_output=True, text=True,
                          timeout=60)


def test_an_interpreter_already_there_is_all_it_needs():
    result = bootstrap(sys.executable)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("args", [[], [sys.executable, "frobnicate"],
                                  [sys.executable, "unpack", "s3://b/env.tar.gz"],
                                  [sys.executable, "install", "s3://b/code"]])
def test_other_command_lines_stop_with_the_usage(args):
    result = bootstrap(*args)
    assert result.returncode != 0
    assert "usage: bootstrap.sh PYTHON [unpack ARCHIVE_URI DIR | install PREFIX WHEEL]" in \
        result.stderr


@pytest.mark.parametrize("python_env, mode", [("archive", []), ("node_archive", ["unpack"]),
                                              ("bootstrap", ["install"])])
def test_the_launchers_arguments_are_a_command_line_it_takes(python_env, mode):
    settings = load_settings(None, {"package.code_uri": "s3://b/code",
                                    "package.python_env": python_env})
    args = bootstrap_args(settings, "imagegraph-0.1.0-py3-none-any.whl")
    assert args[0] == settings.package.node_python
    assert args[1:2] == mode
    assert len(args) == (1 if not mode else 4)
