"""Values kept for one task try: the deployment's Airflow Variables and the AWS clients a task builds.

Inside a task every `INVENTORY_*` setting is an Airflow Variable lookup (a round trip through the task's
supervisor to the API server) and every client from the Airflow connection is a fresh boto3 session that
re-reads the connection. A task asks for its settings and clients many times (each helper, each sensor poke):
44 lookups and a new client each time cost seconds per task. Kept for the try, a task reads the deployment's
values once, so all of its steps agree on them; the next try (a retry, a clear) reads them afresh, so a Variable
fixed before clearing a task is seen. Outside a task (the CLI, tests, scripts) nothing is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


def current_try() -> tuple[str, int] | None:
    """(task instance id, try number) of the task running in this process, or None outside a task."""
    try:
        from airflow.sdk import get_current_context
    except ImportError:
        return None
    try:
        ti = get_current_context()["ti"]
    except (RuntimeError, KeyError):
        return None
    ti_id = getattr(ti, "id", None)
    return (str(ti_id), int(getattr(ti, "try_number", 0) or 0)) if ti_id is not None else None


class PerTry:
    """A memo that holds values for the current task try only (one try runs at a time in a process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._try: tuple[str, int] | None = None
        self._values: dict[Hashable, Any] = {}

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        scope = current_try()
        if scope is None:
            return make()
        with self._lock:
            if scope != self._try:
                self._try, self._values = scope, {}
            if key not in self._values:
                self._values[key] = make()
            return self._values[key]


TASK_TRY = PerTry()
