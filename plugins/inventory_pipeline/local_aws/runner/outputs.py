"""What a finished job leaves in S3: model.tar.gz, output.tar.gz, debug output, profiler and rule output."""

from __future__ import annotations

import io
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def tar_gz(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if directory.is_dir():
            for path in sorted(directory.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=path.relative_to(directory).as_posix())
    return buffer.getvalue()


# Above this a file goes up in parts (s3transfer); below, one PutObject. s3transfer's per-call set-up (a transfer
# manager and its threads for each file) cost 5 s of CPU for a job's 1033 small tensor files.
SINGLE_PUT_MAX_BYTES = 64 * 1024 * 1024


def upload_tree(s3: Any, directory: Path, bucket: str, prefix: str, workers: int = 8) -> int:
    """Every file under `directory` to `s3://bucket/prefix/<relative path>`; returns the count."""
    if not directory.is_dir():
        return 0
    files = [path for path in sorted(directory.rglob("*")) if path.is_file()]

    def upload(path: Path) -> None:
        key = f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}"
        if path.stat().st_size > SINGLE_PUT_MAX_BYTES:
            s3.upload_file(str(path), bucket, key)
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(files)))) as pool:
        for _ in pool.map(upload, files):  # the first failure is raised
            pass
    return len(files)
