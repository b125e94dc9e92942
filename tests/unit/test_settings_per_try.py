"""settings_from inside a task: a task try reads the deployment's Variables once, however many times its steps
(and a sensor's pokes) ask for the settings; the next try reads them afresh, and outside a task no Variable is
read at all."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from inventory_pipeline import settings as settings_module


@pytest.fixture()
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []

    def variable(name: str) -> str | None:
        names.append(name)
        return {"INVENTORY_MAX_RUNTIME_S": "7200"}.get(name)

    monkeypatch.setattr(settings_module, "_airflow_variable", variable)
    monkeypatch.setattr(settings_module, "_DEPLOYMENT_PER_TRY", settings_module._DeploymentPerTry())
    return names


def _in_task(monkeypatch: pytest.MonkeyPatch, ti_id: str, try_number: int) -> None:
    context = {
        "dag": SimpleNamespace(params={"max_runtime_s": None}),
        "ti": SimpleNamespace(id=ti_id, try_number=try_number),
    }
    monkeypatch.setattr(settings_module, "_task_context", lambda: context)


def test_values_are_kept_for_one_try_and_read_afresh_by_the_next(monkeypatch: pytest.MonkeyPatch, asked: list[str]):
    monkeypatch.setattr(settings_module, "_task_context", lambda: None)
    settings_module.settings_from({"max_runtime_s": None})
    assert asked == []  # outside a task: the environment alone
    _in_task(monkeypatch, "ti-1", 1)
    first = settings_module.settings_from({"max_runtime_s": None})
    per_call = len(asked)
    assert first.max_runtime_s == 7200 and per_call == len(set(asked)) > 10
    for _ in range(5):  # a task's helpers and a sensor's pokes
        assert settings_module.settings_from({"max_runtime_s": None}).max_runtime_s == 7200
    assert len(asked) == per_call
    _in_task(monkeypatch, "ti-1", 2)  # a retry or a clear: a new try
    settings_module.settings_from({"max_runtime_s": None})
    assert len(asked) == 2 * per_call
    _in_task(monkeypatch, "ti-2", 1)  # the next task
    settings_module.settings_from({"max_runtime_s": None})
    assert len(asked) == 3 * per_call


def test_a_task_instance_without_an_id_keeps_nothing(monkeypatch: pytest.MonkeyPatch, asked: list[str]):
    context = {"dag": SimpleNamespace(params={"max_runtime_s": None}), "ti": SimpleNamespace(try_number=1)}
    monkeypatch.setattr(settings_module, "_task_context", lambda: context)
    settings_module.settings_from({"max_runtime_s": None})
    per_call = len(asked)
    settings_module.settings_from({"max_runtime_s": None})
    assert per_call > 10 and len(asked) == 2 * per_call
