"""A buffer a background thread flushes every second: how the runner ships a job's log lines and metric values
while it runs, in few requests. Shipping is best effort, as on SageMaker: a job never fails because of it."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)
PER_CALL = 1000  # both PutLogEvents and PutMetricData take at most 1000 entries a call


class PeriodicBatcher:
    """Subclasses say how one chunk is sent (`_send`) and what it is called in logs (`what`)."""

    what = "entries"

    def __init__(self, thread_name: str, flush_every_s: float = 1.0):
        self.flush_every_s = flush_every_s
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=thread_name)
        self._thread.start()

    def _add(self, entries: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pending += entries

    def _send(self, chunk: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for start in range(0, len(batch), PER_CALL):
            chunk = batch[start : start + PER_CALL]
            try:
                self._send(chunk)
            except Exception:  # best effort: the job must not fail because a line or a value did not ship
                log.exception("could not ship %d %s", len(chunk), self.what)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
