"""Training jobs on disk: one JSON document per job, written atomically, shared by the server and runners.

The server answers Describe/List from these files and writes what the API changes (Stopping, tags, updates);
a runner (a separate process) updates its own job's file as the job moves; a stop request is also a marker
file the runner polls. Read-modify-write holds an exclusive `flock` on the job's lock file, so the server's and
the runner's changes never overwrite each other. State on disk is what lets jobs
survive a server restart, and lets a restarted server tell that a runner died with its job in progress.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NON_TERMINAL = ("InProgress", "Stopping")
_LOCK = threading.Lock()


class JobStore:
    def __init__(self, state_dir: Path):
        self.root = Path(state_dir)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / "jobs" / f"{name}.json"

    def work_dir(self, name: str) -> Path:
        return self.root / "work" / name

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def read(self, name: str) -> dict[str, Any]:
        return json.loads(self.path(name).read_text())

    def write(self, job: dict[str, Any]) -> None:
        path = self.path(job["TrainingJobName"])
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(job, indent=1, default=str))
        os.replace(tmp, path)  # readers see the old or the new document, never half of one

    def update(self, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read-modify-write under the job's lock (threads of this process and the other process alike)."""
        with _LOCK, open(self.root / "jobs" / f"{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            job = self.read(name)
            change(job)
            job["LastModifiedTime"] = time.time()
            self.write(job)
            return job

    def delete(self, name: str) -> None:
        """The job's document, markers and work directory (DeleteTrainingJob)."""
        for suffix in (".json", ".stop", ".update", ".interrupt", ".lock"):
            (self.root / "jobs" / f"{name}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(self.work_dir(name), ignore_errors=True)

    def names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "jobs").glob("*.json"))

    # --- stop requests --------------------------------------------------------------------------------

    def request_stop(self, name: str) -> None:
        (self.root / "jobs" / f"{name}.stop").touch()

    def stop_requested(self, name: str) -> bool:
        return (self.root / "jobs" / f"{name}.stop").exists()

    # --- update requests (UpdateTrainingJob changed what the runner applies, e.g. the profiler) ---------

    def request_update(self, name: str) -> None:
        (self.root / "jobs" / f"{name}.update").touch()

    def take_update_request(self, name: str) -> bool:
        """True once per request: the runner re-reads the job's settings."""
        try:
            (self.root / "jobs" / f"{name}.update").unlink()
            return True
        except FileNotFoundError:
            return False

    # --- Spot interruptions (the local stand-in for SageMaker reclaiming Spot capacity) ----------------

    def request_interruption(self, name: str, capacity_wait_s: float = 1.0) -> None:
        """Interrupt the job's Spot instances now; new capacity comes back after `capacity_wait_s`."""
        (self.root / "jobs" / f"{name}.interrupt").write_text(str(float(capacity_wait_s)))

    def take_interruption(self, name: str) -> float | None:
        """The pending interruption's capacity wait (consumed), or None."""
        marker = self.root / "jobs" / f"{name}.interrupt"
        try:
            wait = float(marker.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return None
        marker.unlink(missing_ok=True)
        return wait
