"""`make package`: everything an EMR run uploads, in build/package (the layout and names are
`imagegraph.emr.package`'s):

- the imagegraph wheel, requirements.txt, the job entry files (jobs/*.py) and bootstrap.sh;
- imagegraph-env.tar.gz, the pinned environment for `--archives <uri>#environment` with
  `PYSPARK_PYTHON=./environment/bin/python`, as PySpark's package-management guide describes.

    python emr/build_package.py [--out build/package] [--node-python /usr/bin/python3.11]

The environment is a fresh venv (build/package-venv, kept for inspection; no system
site-packages, nothing editable) with requirements.txt and the wheel, then without pyspark,
because EMR's Spark puts its own pyspark and py4j ahead of site-packages on every Python
worker's path. venv-pack does not pack the interpreter: bin/python stays a symlink, which the
archive points at --node-python, the interpreter on the nodes (EMR 7.x has
/usr/bin/python3.11; the bootstrap action installs it where it is missing). The packages are
this machine's CPython 3.11 x86_64 wheels, so the archive fits nodes with the same Python
minor version and architecture; build on Amazon Linux 2023 (README "Run on EMR") to match EMR
exactly.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

from imagegraph.emr import package  # noqa: E402  (lib/ is on the path from here on)


def run(*argv: str, **env: str) -> None:
    subprocess.run(argv, check=True, cwd=ROOT, env={**os.environ, **env})


def build_wheel(out: Path) -> Path:
    """The imagegraph wheel, without dependencies, built from a copy of setup.py,
    requirements.txt and lib/: built in place, setuptools would leave build/lib behind and
    package whatever stale modules it holds next time."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp)
        for name in ("setup.py", package.REQUIREMENTS):
            shutil.copy2(ROOT / name, source / name)
        shutil.copytree(ROOT / "lib", source / "lib",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
            "--wheel-dir", str(out.resolve()), str(source))
    return package.wheel_file(out)


def copy_entry_files(out: Path) -> None:
    """requirements.txt, bootstrap.sh and the jobs' entry files, beside the wheel."""
    shutil.copy2(ROOT / package.REQUIREMENTS, out / package.REQUIREMENTS)
    shutil.copy2(ROOT / "emr" / package.BOOTSTRAP, out / package.BOOTSTRAP)
    for entry in package.ENTRY_FILES:
        (out / entry).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / entry, out / entry)


def build_environment(env_dir: Path, wheel: Path) -> None:
    """A clean venv with the pins and the wheel, checked by importing the jobs' modules, then
    without pyspark (EMR's comes first on the workers' path)."""
    venv.EnvBuilder(clear=True, symlinks=True, with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-r", package.REQUIREMENTS, str(wheel))
    run(python, "-m", "pip", "check", "--disable-pip-version-check")
    run(python, "-c", "import imagegraph.inference_job, imagegraph.training, tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2")
    run(python, "-m", "pip", "uninstall", "--quiet", "--yes", "pyspark")


@contextlib.contextmanager
def interpreter_pointed_at(env_dir: Path, node_python: str):
    """Within the block, bin/python* and pyvenv.cfg name `node_python`, the interpreter on the
    nodes, so the archive works wherever that path is a CPython of the same minor version;
    afterwards they name this machine's again and the venv stays usable here."""
    links = {link: os.readlink(link) for link in (env_dir / "bin").glob("python*")
             if link.is_symlink()}
    cfg = env_dir / "pyvenv.cfg"
    original_cfg = cfg.read_text()
    kept = [line for line in original_cfg.splitlines()
            if not line.startswith(("home", "executable", "command"))]
    try:
        for link in links:
            link.unlink()
            link.symlink_to(node_python)
        cfg.write_text("\n".join([f"home = {Path(node_python).parent}",
                                  f"executable = {node_python}", *kept]) + "\n")
        yield
    finally:
        for link, target in links.items():
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        cfg.write_text(original_cfg)


def pack(env_dir: Path, archive: Path) -> None:
    import venv_pack

    venv_pack.pack(prefix=str(env_dir), output=str(archive), format="tar.gz", force=True)
    archive.chmod(0o644)  # venv-pack leaves its temporary file's 0600


@contextlib.contextmanager
def stage(name: str):
    begun = time.monotonic()
    yield
    print(f"package: {name} {time.monotonic() - begun:.0f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "build" / "package"), metavar="DIR",
                        help="output directory (default: build/package; emptied first)")
    parser.add_argument("--node-python", default="/usr/bin/python3.11", metavar="PATH",
                        help="the interpreter on the EMR nodes that the packed environment's "
                             "bin/python links to (default: /usr/bin/python3.11)")
    args = parser.parse_args()
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    named = re.search(r"python(\d+\.\d+)$", args.node_python)
    if not named or named.group(1) != ours:
        print(f"build_package: --node-python {args.node_python} must name a python{ours} "
              f"binary (this build's Python is {ours})", file=sys.stderr)
        return 2

    out = Path(args.out)
    env_dir = out.parent / "package-venv"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    with stage("wheel and entry files"):
        wheel = build_wheel(out)
        copy_entry_files(out)
    with stage("environment (pip install)"):
        build_environment(env_dir, wheel)
    with stage("venv-pack"), interpreter_pointed_at(env_dir, args.node_python):
        pack(env_dir, out / package.ENV_ARCHIVE)
    archive = out / package.ENV_ARCHIVE
    print(f"package: {out} in {time.monotonic() - started:.0f} s; {archive.name} "
          f"{archive.stat().st_size / 2**20:.0f} MiB, bin/python -> {args.node_python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
