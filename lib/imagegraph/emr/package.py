"""The package an EMR run needs: what `make package` leaves in build/package and where each
file lands under the S3 prefix `package.code_uri`.

    build/package/                          s3://<code_uri>/
      imagegraph-env.tar.gz                   imagegraph-env.tar.gz   (python_env: archive)
      imagegraph-<version>-py3-none-any.whl   imagegraph-<version>-py3-none-any.whl
      requirements.txt                        requirements.txt
      bootstrap.sh                            bootstrap.sh
      jobs/infer.py, train.py, link.py        jobs/infer.py, train.py, link.py
    conf/emr.yaml (package.job_config)        conf/emr.yaml

`emr/build_package.py` builds the directory with these names; the launcher uploads it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from imagegraph.errors import JobError

ENV_ARCHIVE = "imagegraph-env.tar.gz"
REQUIREMENTS = "requirements.txt"
BOOTSTRAP = "bootstrap.sh"
ENTRY_FILES = ("jobs/infer.py", "jobs/train.py", "jobs/link.py")
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
    names = [REQUIREMENTS, BOOTSTRAP, *ENTRY_FILES] + ([ENV_ARCHIVE] if with_env_archive else [])
    for name in names:
        if not (package_dir / name).is_file():
            raise JobError(f"{package_dir / name} is missing; run `make package`")
    return [Path(name) for name in names] + [wheel_file(package_dir).relative_to(package_dir)]


def uploads(package_dir: str, code_uri: str, job_config: str,
            with_env_archive: bool) -> list[Upload]:
    """Every file to upload: the package files under `code_uri`, keeping their relative paths,
    and the job configuration under `<code_uri>/conf/`."""
    bucket, prefix = split_s3_uri(code_uri)
    root = Path(package_dir)
    config = Path(job_config)
    if not config.is_file():
        raise JobError(f"job configuration {job_config} does not exist")
    pairs = [(root / rel, rel.as_posix()) for rel in package_files(root, with_env_archive)]
    pairs.append((config, f"{CONF_DIR}/{config.name}"))
    return [Upload(path, bucket, "/".join(p for p in (prefix, key) if p), file_sha256(path))
            for path, key in pairs]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
