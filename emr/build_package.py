"""`make package`: everything an EMR run uploads, in build/package (the layout and names are
`imagegraph.emr.package`'s):

- the imagegraph wheel, requirements.txt, constraints.txt, the job entry files (jobs/*.py)
  and bootstrap.sh;
- imagegraph-env.tar.gz, the pinned environment for `--archives <uri>#environment` with
  `PYSPARK_PYTHON=./environment/bin/python`, as PySpark's package-management guide describes.

    python emr/build_package.py [--out build/package] [--settings emr/launcher.yaml]
    python emr/build_package.py --lock      # rewrite constraints.txt (`make lock`)

The environment is a fresh venv (build/package-venv, kept for inspection; no system
site-packages, nothing editable) with requirements.txt under constraints.txt (every
transitive package pinned: a package installed that constraints.txt does not pin stops the
build) and the wheel, then without pyspark, because EMR's Spark puts its own pyspark and py4j
ahead of site-packages on every Python worker's path. venv-pack does not pack the
interpreter: bin/python stays a symlink, which the archive points at the settings'
`package.node_python`, the interpreter on the nodes (EMR 7.x has /usr/bin/python3.11; the
bootstrap action installs it where it is missing). The packages are this machine's CPython
3.11 x86_64 wheels, so the archive fits nodes with the same Python minor version and
architecture; build on Amazon Linux 2023 (docs/EMR.md) to match EMR exactly.

The relinking is done here rather than by venv-pack's `python_prefix`: venv-pack 0.2.0
replaces the prefix `<home>/bin/python` inside the link target, so Python 3.11's venv link
`bin/python3.11 -> <home>/bin/python3.11` comes out as `/usr/bin/python3.113.11` (packed with
python_prefix=/usr on this machine, 2026-12-01), an interpreter no node has.
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
from imagegraph.emr.settings import DEFAULT_PATH, load_settings  # noqa: E402


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
    """requirements.txt, constraints.txt, bootstrap.sh and the jobs' entry files, beside the
    wheel."""
    shutil.copy2(ROOT / package.REQUIREMENTS, out / package.REQUIREMENTS)
    shutil.copy2(ROOT / package.CONSTRAINTS, out / package.CONSTRAINTS)
    shutil.copy2(ROOT / "emr" / package.BOOTSTRAP, out / package.BOOTSTRAP)
    for entry in package.ENTRY_FILES:
        (out / entry).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / entry, out / entry)


def installed(python: str) -> dict[str, str]:
    """{canonical name: version} of what `python`'s environment holds (pip freeze), pip's own
    tools left out."""
    frozen = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable",
                             "--disable-pip-version-check"], check=True, capture_output=True,
                            text=True).stdout
    pins = dict(line.split("==", 1) for line in frozen.splitlines() if "==" in line)
    return {canonical(name): version for name, version in pins.items()
            if canonical(name) not in {"pip", "setuptools", "wheel", "imagegraph"}}


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(constraints: Path) -> dict[str, str]:
    """{canonical name: version} of constraints.txt's `name==version` lines."""
    pins = (line.split("#", 1)[0].strip() for line in constraints.read_text().splitlines())
    return {canonical(name): version for name, version in
            (pin.split("==", 1) for pin in pins if "==" in pin)}


def build_environment(env_dir: Path, wheel: Path | None, constrained: bool = True) -> None:
    """A clean venv with the pins (under constraints.txt) and the wheel, checked by importing
    the jobs' modules, then without pyspark (EMR's comes first on the workers' path). Without
    `wheel` and `constrained`: only requirements.txt as pip resolves it today (`--lock`)."""
    venv.EnvBuilder(clear=True, symlinks=True, with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    constraints = ["-c", package.CONSTRAINTS] if constrained else []
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-r", package.REQUIREMENTS, *constraints, *([str(wheel)] if wheel else []))
    run(python, "-m", "pip", "check", "--disable-pip-version-check")
    if not wheel:
        return
    unlocked = sorted(set(installed(python)) - set(locked(ROOT / package.CONSTRAINTS)))
    if unlocked:
        raise SystemExit(f"build_package: {', '.join(unlocked)} installed but not pinned in "
                         f"{package.CONSTRAINTS}; run `make lock`")
    run(python, "-c", "import imagegraph.infer.job, imagegraph.train.job, tensorflow",
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


def write_lock(env_dir: Path) -> None:
    """constraints.txt: every package requirements.txt installs, as pip resolves it now."""
    with stage("environment to lock (pip install)"):
        build_environment(env_dir, None, constrained=False)
    pins = installed(str(env_dir / "bin" / "python"))
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    (ROOT / package.CONSTRAINTS).write_text(
        "# Every package requirements.txt installs, transitive ones included: `make package`\n"
        "# and emr/bootstrap.sh install under it. Rewritten by `make lock`.\n"
        + "\n".join(lines) + "\n")
    print(f"package: {package.CONSTRAINTS} pins {len(lines)} packages")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "build" / "package"), metavar="DIR",
                        help="output directory (default: build/package; emptied first)")
    parser.add_argument("--settings", default=str(ROOT / DEFAULT_PATH), metavar="PATH",
                        help="the launcher's settings, whose package.node_python the packed "
                             f"environment's bin/python links to (default: {DEFAULT_PATH})")
    parser.add_argument("--lock", action="store_true",
                        help=f"rewrite {package.CONSTRAINTS} from a fresh install of "
                             f"{package.REQUIREMENTS} instead of building the package")
    args = parser.parse_args()
    out = Path(args.out)
    env_dir = out.parent / "package-venv"
    if args.lock:
        write_lock(env_dir)
        return 0
    node_python = load_settings(args.settings).package.node_python
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    named = re.search(r"python(\d+\.\d+)$", node_python)
    if not named or named.group(1) != ours:
        print(f"build_package: package.node_python {node_python} must name a python{ours} "
              f"binary (this build's Python is {ours})", file=sys.stderr)
        return 2

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    with stage("wheel and entry files"):
        wheel = build_wheel(out)
        copy_entry_files(out)
    with stage("environment (pip install)"):
        build_environment(env_dir, wheel)
    with stage("venv-pack"), interpreter_pointed_at(env_dir, node_python):
        pack(env_dir, out / package.ENV_ARCHIVE)
    archive = out / package.ENV_ARCHIVE
    with stage("bin/python checked in the archive"):
        package.check_archive_python(archive, node_python, package.file_sha256(archive))
    print(f"package: {out} in {time.monotonic() - started:.0f} s; {archive.name} "
          f"{archive.stat().st_size / 2**20:.0f} MiB, bin/python -> {node_python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
