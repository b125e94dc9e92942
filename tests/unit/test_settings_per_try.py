"""settings_from inside a task: a task try reads the deployment's Variables once, however many times its steps
(and a sensor's pokes) ask for the settings; the next try reads them afresh, and outside a task no Variable is
read at all. A try lists the Variables that exist first and asks only for those, unless a secrets backend the
listing cannot see is configured."""

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
    monkeypatch.setattr(settings_module, "_airflow_variable_names", lambda: None)  # ask every name
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


def test_a_try_asks_only_for_the_variables_that_exist(monkeypatch: pytest.MonkeyPatch, asked: list[str]):
    monkeypatch.setattr(settings_module, "_airflow_variable_names", lambda: frozenset({"INVENTORY_MAX_RUNTIME_S"}))
    monkeypatch.setenv("INVENTORY_BUCKET", "from-the-environment")
    _in_task(monkeypatch, "ti-1", 1)
    settings = settings_module.settings_from({"max_runtime_s": None})
    assert asked == ["INVENTORY_MAX_RUNTIME_S"]
    assert settings.max_runtime_s == 7200 and settings.bucket == "from-the-environment"


class _Backend:
    def __init__(self, *args, **kwargs):
        pass


def _secrets_backends(monkeypatch: pytest.MonkeyPatch, backends: list, keys: list[str]) -> list[str]:
    from airflow.sdk import Variable
    from airflow.sdk.execution_time import supervisor

    prefixes: list[str] = []

    def listed(prefix: str | None = None) -> list[str]:
        prefixes.append(prefix)
        return keys

    monkeypatch.setattr(supervisor, "ensure_secrets_backend_loaded", lambda: backends)
    monkeypatch.setattr(Variable, "keys", listed)
    return prefixes


def test_the_listing_holds_the_metadata_db_and_environment_variables(monkeypatch: pytest.MonkeyPatch):
    from airflow.sdk.execution_time.secrets import ExecutionAPISecretsBackend
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    backends = [EnvironmentVariablesBackend(), ExecutionAPISecretsBackend()]
    prefixes = _secrets_backends(monkeypatch, backends, ["INVENTORY_BUCKET"])
    monkeypatch.setenv("AIRFLOW_VAR_INVENTORY_PREFIX", "abid/")
    monkeypatch.setenv("AIRFLOW_VAR_OTHER_TEAM", "x")
    assert settings_module._airflow_variable_names() == {"INVENTORY_BUCKET", "INVENTORY_PREFIX"}
    assert prefixes == ["INVENTORY_"]


def test_a_secrets_backend_or_a_failed_listing_means_asking_every_name(monkeypatch: pytest.MonkeyPatch):
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    _secrets_backends(monkeypatch, [EnvironmentVariablesBackend(), _Backend()], ["INVENTORY_BUCKET"])
    assert settings_module._airflow_variable_names() is None  # Variable.keys cannot see a Secrets Manager's

    def unreachable(prefix: str | None = None) -> list[str]:
        raise RuntimeError("the API server did not answer")

    from airflow.sdk import Variable

    _secrets_backends(monkeypatch, [EnvironmentVariablesBackend()], [])
    monkeypatch.setattr(Variable, "keys", unreachable)
    assert settings_module._airflow_variable_names() is None
