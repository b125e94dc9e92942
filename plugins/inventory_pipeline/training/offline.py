"""What a job needs that would otherwise come from the internet at start-up, shipped ahead of time:

- the training code's extra Python packages (`training_code/requirements.txt`) as wheels inside
  `sourcedir.tar.gz`, with a requirements file that tells pip to install them without an index (SageMaker's
  training toolkit runs `pip install -r requirements.txt` in the code directory; pip resolves a relative
  `--find-links` against the requirements file's own directory);
- the pretrained checkpoint, uploaded once to the project bucket under a content-addressed prefix and given to
  the job as its `pretrained` channel.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
WHEELS_DIR = "wheels"
OFFLINE_HEADER = f"--no-index\n--find-links {WHEELS_DIR}\n"


class OfflineError(ValueError):
    """What the job needs cannot be shipped as asked; the message says what is missing."""


def requirement_names(requirements: str) -> list[str]:
    """The normalised project names a requirements file asks for (options and comments skipped)."""
    names = []
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match:
            names.append(_normalise(match.group(0)))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    return _normalise(path.name.split("-", 1)[0])


def vendored_files(requirements: str, wheelhouse: Path) -> dict[str, bytes]:
    """The archive members that replace `requirements.txt`: the offline requirements and every wheel of the
    wheelhouse (the requirements and the dependencies the container lacks). Each requirement needs its wheel."""
    wheels = sorted(Path(wheelhouse).glob("*.whl"))
    missing = sorted(set(requirement_names(requirements)) - {wheel_name(w) for w in wheels})
    if missing:
        raise OfflineError(
            f"the wheelhouse {wheelhouse} has no wheel for {missing} (training_code/requirements.txt): "
            "run `make wheels` (downloads them once, outside the job)"
        )
    files = {f"{WHEELS_DIR}/{w.name}": w.read_bytes() for w in wheels}
    files["requirements.txt"] = (OFFLINE_HEADER + requirements).encode()
    return files


def upload_pretrained(s3: Any, bucket: str, root: str, directory: Path) -> str:
    """Upload every file of `directory` once under `<root>pretrained/<sha of the contents>/`; return that prefix's
    URI (the `pretrained` channel, `pretrained_s3_uri`). An unchanged directory uploads nothing."""
    from botocore.exceptions import ClientError

    files = sorted(p for p in Path(directory).rglob("*") if p.is_file() and not p.name.endswith(".part"))
    if not files:
        raise OfflineError(f"{directory} holds no checkpoint: run `make pretrained` first")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    prefix = f"{root}pretrained/{digest.hexdigest()[:16]}/"
    for path in files:
        key = prefix + path.relative_to(directory).as_posix()
        try:
            if s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == path.stat().st_size:
                continue
        except ClientError as exc:
            from inventory_pipeline.aws.s3_paths import is_missing

            if not is_missing(exc):
                raise
        s3.upload_file(str(path), bucket, key)
        log.info("uploaded %s to s3://%s/%s", path, bucket, key)
    return f"s3://{bucket}/{prefix}"
