"""The package an EMR run needs: what `make package` leaves in build/package and where each
file lands under the S3 prefix `package.code_uri`.

    build/package/                          s3://<code_uri>/
      imagegraph-env.tar.gz                   imagegraph-env.tar.gz   (python_env: archive)
      imagegraph-<version>-py3-none-any.whl   imagegraph-<version>-py3-none-any.whl
      requirements.txt                        requirements.txt
      constraints.txt                         constraints.txt         (every package pinned)
      bootstrap.sh                            bootstrap.sh
      jobs/infer.py, jobs/train.py            jobs/infer.py, jobs/train.py
    conf/emr.yaml (package.job_config)        conf/emr.yaml

`emr/build_package.py` builds the directory with these names; the launcher uploads it, once
the environment archive's bin/python is seen to link to the nodes' interpreter (read from the
archive once per content, then from imagegraph-env.python.json beside it).
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path

from imagegraph.errors import JobError

ENV_ARCHIVE = "imagegraph-env.tar.gz"
# Beside the archive, not uploaded: {"sha256": the archive's, "python": its bin/python's
# target}, so a launch need not read 500 MiB of tar.gz again to check an unchanged archive.
ENV_ARCHIVE_PYTHON = "imagegraph-env.python.json"
REQUIREMENTS = "requirements.txt"
CONSTRAINTS = "constraints.txt"
BOOTSTRAP = "bootstrap.sh"
ENTRY_FILES = ("jobs/infer.py", "jobs/train.py")
WHEEL_PATTERN = "imagegraph-*-py3-none-any.whl"
CONF_DIR = "conf"


@dataclass(frozen=True)
class Upload:
    """One local file and the S3 object it becomes; `sha256` (hex) travels as object metadata
    so an unchanged file is not uploaded again."""

    path: Path
    bucket: str
    key: str
    sha256: str

    def request(self) -> dict:
        """The keyword arguments of boto3's `S3.Client.upload_file` for this file."""
        return {"Filename": str(self.path), "Bucket": self.bucket, "Key": self.key,
                "ExtraArgs": {"Metadata": {"sha256": self.sha256}}}


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> `('bucket', 'a/b')`; `JobError` for anything but an s3:// URI."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise JobError(f"package.code_uri must be an s3://bucket/prefix URI, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


def wheel_file(package_dir: Path) -> Path:
    """The one imagegraph wheel in `package_dir`."""
    wheels = sorted(package_dir.glob(WHEEL_PATTERN))
    if len(wheels) != 1:
        found = ", ".join(w.name for w in wheels) or "none"
        raise JobError(f"{package_dir} must hold exactly one {WHEEL_PATTERN} (found {found}); "
                       "run `make package`")
    return wheels[0]


def package_files(package_dir: Path, with_env_archive: bool) -> list[Path]:
    """The files of the package, relative to `package_dir`; `JobError` naming the first one
    missing. The environment archive only when the jobs run from it."""
    names = [REQUIREMENTS, CONSTRAINTS, BOOTSTRAP, *ENTRY_FILES] + \
        ([ENV_ARCHIVE] if with_env_archive else [])
    for name in names:
        if not (package_dir / name).is_file():
            raise JobError(f"{package_dir / name} is missing; run `make package`")
    return [Path(name) for name in names] + [wheel_file(package_dir).relative_to(package_dir)]


def archive_python(archive: Path) -> str | None:
    """The interpreter the packed environment's bin/python runs, its symlinks followed inside
    bin/ (`python -> python3.11 -> /usr/bin/python3.11`); None when it has no bin/python
    symlink. Reads the tar.gz only as far as its bin/ entries."""
    links: dict[str, str] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.issym() and member.name.startswith("bin/python"):
                    links[member.name] = member.linkname
                    target = _followed(links, "bin/python")
                    if target is not None:
                        return target
    except (tarfile.TarError, OSError) as exc:
        raise JobError(f"{archive} is not a readable tar.gz: {exc}; run `make package`") from None
    return None


def _followed(links: dict[str, str], name: str) -> str | None:
    """Where the symlink `name` leads through `links` (archive paths); None while unknown."""
    for _ in range(8):
        if name not in links:
            return None if name.startswith("bin/") else name
        target = links[name]
        name = target if target.startswith("/") else posixpath.normpath(
            posixpath.join(posixpath.dirname(name), target))
    return None


def record_archive_python(archive: Path, sha256: str) -> str | None:
    """The archive's bin/python target (`archive_python`), read once per content: kept in
    ENV_ARCHIVE_PYTHON beside it under the archive's `sha256`."""
    record = archive.parent / ENV_ARCHIVE_PYTHON
    try:
        known = json.loads(record.read_text())
        if known.get("sha256") == sha256:
            return known.get("python")
    except (OSError, ValueError):
        pass
    linked = archive_python(archive)
    record.write_text(json.dumps({"sha256": sha256, "python": linked}) + "\n")
    return linked


def check_archive_python(archive: Path, node_python: str, sha256: str) -> None:
    """`JobError` unless the archive (of content `sha256`) has bin/python link to
    `node_python`."""
    linked = record_archive_python(archive, sha256)
    if linked != node_python:
        raise JobError(f"{archive.name}'s bin/python links to {linked or 'nothing'}, not "
                       f"package.node_python {node_python}: rebuild it with `make package`")


def uploads(package_dir: str, code_uri: str, job_config: str, with_env_archive: bool,
            node_python: str) -> list[Upload]:
    """Every file to upload: the package files under `code_uri`, keeping their relative paths,
    and the job configuration under `<code_uri>/conf/`; with the environment archive, once its
    bin/python is seen to link to `node_python`."""
    bucket, prefix = split_s3_uri(code_uri)
    root = Path(package_dir)
    config = Path(job_config)
    if not config.is_file():
        raise JobError(f"job configuration {job_config} does not exist")
    pairs = [(root / rel, rel.as_posix()) for rel in package_files(root, with_env_archive)]
    pairs.append((config, f"{CONF_DIR}/{config.name}"))
    planned = [Upload(path, bucket, "/".join(p for p in (prefix, key) if p), file_sha256(path))
               for path, key in pairs]
    for upload in planned:
        if upload.path.name == ENV_ARCHIVE:
            check_archive_python(upload.path, node_python, upload.sha256)
    return planned


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
