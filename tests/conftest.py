"""Shared by unit and integration tests: dev/ (services, sample images) on the import path,
a stand-in for the EMR package, and the unit tests' SparkSession (the integration tests'
conftest overrides `spark` with the session of their servers)."""
import io
import os
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))


@pytest.fixture
def emr_package(tmp_path):
    """A stand-in for build/package (layout: imagegraph.emr.package): the real entry files,
    bootstrap action, requirements.txt and constraints.txt, a small wheel and as the
    environment archive a tar.gz of bin/python links to /usr/bin/python3.11 and 300 kB of
    random bytes. Returns its directory, tmp_path/package."""
    from imagegraph.emr import package

    directory = tmp_path / "package"
    (directory / "jobs").mkdir(parents=True)
    for entry in package.ENTRY_FILES:
        (directory / entry).write_bytes((ROOT / entry).read_bytes())
    (directory / package.BOOTSTRAP).write_bytes((ROOT / "emr" / "bootstrap.sh").read_bytes())
    for name in (package.REQUIREMENTS, package.CONSTRAINTS):
        (directory / name).write_bytes((ROOT / name).read_bytes())
    (directory / "imagegraph-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    write_env_archive(directory / package.ENV_ARCHIVE, "/usr/bin/python3.11")
    return directory


@pytest.fixture
def env_archive():
    """`write(path, python)`: writes an environment archive whose bin/python leads to
    `python` (see write_env_archive)."""
    return write_env_archive


def write_env_archive(path: Path, python: str) -> None:
    """A tar.gz laid out as venv-pack packs a venv: bin/python -> python3.11 -> `python`, and
    300 kB of random bytes in lib/."""
    with tarfile.open(path, "w:gz") as tar:
        payload = os.urandom(300_000)
        data = tarfile.TarInfo("lib/python3.11/site-packages/payload.bin")
        data.size = len(payload)
        tar.addfile(data, io.BytesIO(payload))
        for name, target in (("bin/python", "python3.11"), ("bin/python3.11", python)):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)


@pytest.fixture(scope="module")
def spark(request):
    """A `local[1]` SparkSession for one unit-test module, stopped at the module's end, so that
    the next module (or the integration tests' configured session) starts its own. Python UDFs
    run this interpreter."""
    from pyspark.sql import SparkSession
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[1]").appName(request.module.__name__)
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    yield session
    session.stop()
