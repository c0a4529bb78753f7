"""Shared by unit and integration tests: dev/ (services, sample images) on the import path,
and a stand-in for the EMR package."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))


@pytest.fixture
def emr_package(tmp_path):
    """A stand-in for build/package (layout: imagegraph.emr.package): the real entry files,
    bootstrap action and requirements.txt, a small wheel and 300 kB of random bytes as the
    environment archive. Returns its directory, tmp_path/package."""
    from imagegraph.emr import package

    directory = tmp_path / "package"
    (directory / "jobs").mkdir(parents=True)
    for entry in package.ENTRY_FILES:
        (directory / entry).write_bytes((ROOT / entry).read_bytes())
    (directory / package.BOOTSTRAP).write_bytes((ROOT / "emr" / "bootstrap.sh").read_bytes())
    (directory / package.REQUIREMENTS).write_bytes((ROOT / "requirements.txt").read_bytes())
    (directory / "imagegraph-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (directory / package.ENV_ARCHIVE).write_bytes(os.urandom(300_000))
    return directory
