"""Helpers the test modules and the fault scenarios share (tests/ is on sys.path: pytest puts the root conftest's
folder there; benchmarks/faults.py adds it)."""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from typing import Any


def tar_archive(
    files: dict[str, bytes | str],
    symlinks: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
) -> bytes:
    """A gzipped tar in memory, as a sourcedir.tar.gz or model.tar.gz; links let tests build hostile archives."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            payload = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for kind, links in ((tarfile.SYMTYPE, symlinks or {}), (tarfile.LNKTYPE, hardlinks or {})):
            for name, target in links.items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                tar.addfile(info)
    return buffer.getvalue()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "") -> Any:
    """The predicate's first truthy value; TimeoutError naming `what` when none came in `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what or 'condition'} not reached within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_hosts(cmd: Sequence[str], env_for_host: Callable[[str], dict[str, str]], hosts: Sequence[str]) -> list:
    """One process per host of a multi-host job, output merged into stdout as SageMaker's log stream has it."""
    return [subprocess.Popen(list(cmd), env=env_for_host(host), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for host in hosts]  # fmt: skip
