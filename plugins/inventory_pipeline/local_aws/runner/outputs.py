"""What a finished job leaves in S3: model.tar.gz, output.tar.gz, debug output, profiler and rule output."""

from __future__ import annotations

import io
import tarfile
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


def upload_tree(s3: Any, directory: Path, bucket: str, prefix: str) -> int:
    """Every file under `directory` to `s3://bucket/prefix/<relative path>`; returns the count."""
    count = 0
    if not directory.is_dir():
        return 0
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}")
            count += 1
    return count
