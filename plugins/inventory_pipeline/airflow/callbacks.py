"""Task callbacks (light: imported when the DAG is parsed)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def remember_failure(context: Any) -> None:
    """Keep a failed task's error in XCom (key "failure"), so the gate can record why the run failed."""
    error = context.get("exception")
    try:
        context["ti"].xcom_push(key="failure", value=f"{type(error).__name__}: {error}"[:2000] if error else "failed")
    except Exception as exc:  # a callback must never hide the task's own failure
        log.warning("could not record the failure in XCom: %s", exc)
