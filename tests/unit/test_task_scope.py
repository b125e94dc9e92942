"""aws.task_scope: a task try reads the deployment's Variables once, however many times its steps (and a
sensor's pokes) ask for the settings; the next try reads them afresh, and outside a task nothing is kept."""

from __future__ import annotations

import pytest

from inventory_pipeline.aws import task_scope


def test_values_are_kept_for_one_try_and_read_afresh_by_the_next(monkeypatch: pytest.MonkeyPatch):
    current: list[tuple[str, int] | None] = [None]
    monkeypatch.setattr(task_scope, "current_try", lambda: current[0])
    memo, made = task_scope.PerTry(), []

    def make() -> int:
        made.append(1)
        return len(made)

    assert (memo.get("k", make), memo.get("k", make)) == (1, 2)  # outside a task: made each time
    current[0] = ("ti-1", 1)
    assert (memo.get("k", make), memo.get("k", make)) == (3, 3)
    current[0] = ("ti-1", 2)  # a retry or a clear: a new try
    assert memo.get("k", make) == 4
    current[0] = ("ti-2", 1)  # the next task
    assert memo.get("k", make) == 5


def test_a_tasks_settings_ask_each_variable_once_per_try(monkeypatch: pytest.MonkeyPatch):
    from inventory_pipeline import settings as settings_module

    asked: list[str] = []

    def variable(name: str) -> str | None:
        asked.append(name)
        return {"INVENTORY_MAX_RUNTIME_S": "7200"}.get(name)

    current: list[tuple[str, int]] = [("ti-1", 1)]
    monkeypatch.setattr(task_scope, "current_try", lambda: current[0])
    monkeypatch.setattr(settings_module, "_airflow_variable", variable)
    monkeypatch.setattr(settings_module, "declared_params", lambda: frozenset({"max_runtime_s"}))
    monkeypatch.setattr(task_scope, "TASK_TRY", task_scope.PerTry())
    first = settings_module.settings_from({"max_runtime_s": None})
    per_call = len(asked)
    assert first.max_runtime_s == 7200 and per_call == len(set(asked)) > 10
    for _ in range(5):  # a task's helpers and a sensor's pokes
        assert settings_module.settings_from({"max_runtime_s": None}).max_runtime_s == 7200
    assert len(asked) == per_call
    current[0] = ("ti-1", 2)
    settings_module.settings_from({"max_runtime_s": None})
    assert len(asked) == 2 * per_call
