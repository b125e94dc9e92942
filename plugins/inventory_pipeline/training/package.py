"""Package `training_code/` as SageMaker's `sourcedir.tar.gz`: reproducible bytes, content-addressed key.

The same code always yields the same archive (sorted entries, fixed mtimes/owners, gzip without a
timestamp), so its hash names it and an unchanged training_code is uploaded once, ever.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

from inventory_pipeline.aws.s3_paths import is_missing

log = logging.getLogger(__name__)

TRAINING_CODE_DIR = Path(__file__).resolve().parents[3] / "training_code"
_EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
_EXCLUDED_SUFFIXES = {".pyc", ".pyo"}


@dataclass(frozen=True)
class PackagedCode:
    bucket: str
    key: str
    sha256: str
    size: int
    uploaded: bool

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _included(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return not (set(rel.parts) & _EXCLUDED_PARTS) and path.suffix not in _EXCLUDED_SUFFIXES


def build_sourcedir(code_dir: Path = TRAINING_CODE_DIR, wheelhouse: Path | None = None) -> bytes:
    """The archive's bytes: regular files only, paths relative to the code dir, no metadata that varies.

    With a `wheelhouse`, the extra packages travel inside as wheels and requirements.txt installs them without
    an index (`offline.vendored_files`): the job downloads nothing at start."""
    code_dir = Path(code_dir)
    if not (code_dir / "train.py").is_file():
        raise FileNotFoundError(f"{code_dir} has no train.py: not a training code directory")
    files = sorted(p for p in code_dir.rglob("*") if p.is_file() and not p.is_symlink() and _included(p, code_dir))
    members = {path.relative_to(code_dir).as_posix(): path.read_bytes() for path in files}
    if wheelhouse is not None and "requirements.txt" in members:
        from inventory_pipeline.training.offline import vendored_files

        members.update(vendored_files(members["requirements.txt"].decode(), Path(wheelhouse)))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def upload_sourcedir(
    s3, bucket: str, root: str, code_dir: Path = TRAINING_CODE_DIR, wheelhouse: Path | None = None
) -> PackagedCode:
    """Upload the archive under `<root>code/sourcedir-<sha>.tar.gz` unless that key already exists."""
    from botocore.exceptions import ClientError

    archive = build_sourcedir(code_dir, wheelhouse)
    sha = hashlib.sha256(archive).hexdigest()
    key = f"{root}code/sourcedir-{sha[:16]}.tar.gz"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] == len(archive):
            log.info("training code unchanged: s3://%s/%s already uploaded (%d bytes)", bucket, key, len(archive))
            return PackagedCode(bucket, key, sha, len(archive), uploaded=False)
    except ClientError as exc:
        if not is_missing(exc):
            raise
    s3.put_object(Bucket=bucket, Key=key, Body=archive, ContentType="application/gzip", Metadata={"sha256": sha})
    log.info("uploaded training code to s3://%s/%s (%d bytes, sha256 %s)", bucket, key, len(archive), sha[:16])
    return PackagedCode(bucket, key, sha, len(archive), uploaded=True)
