"""MLflow's tracking server as `mlflow server` runs it, in one process instead of two (the embedded stack).

`mlflow server --workers 1` is a CLI process that imports MLflow's server (4 s of CPU on a 2-core machine),
creates the backend store's tables, then starts uvicorn in a second process that imports it all again, and waits
for it; on SIGTERM that CLI takes 1.3 s more to wind down after its server has stopped. This launcher does what
the CLI does for the options the stack uses, in the process that serves:
- the environment MLflow's app reads its configuration from, as `mlflow.server._run_server` sets it for its
  workers (stores, artifact root and destination, the proxied-artifacts switch, the per-boot id);
- the backend stores initialised before serving (`initialize_backend_stores`: a broken store fails the start);
- the same app, `mlflow.server.fastapi_app:app`, under uvicorn with MLflow's log configuration.
MLflow is pinned (constraints.txt); `tests/integration/test_local_stack_cli.py` and every test that records a
decision run against this server.
"""

from __future__ import annotations

import argparse
import os
import uuid


def server_environment(
    backend_store_uri: str, serve_artifacts: bool, artifacts_destination: str | None, default_artifact_root: str | None
) -> dict[str, str]:
    """What `mlflow server` gives its workers for these options."""
    from mlflow.environment_variables import (
        _MLFLOW_IN_JOB_EXECUTOR,
        _MLFLOW_SERVER_BOOT_ID,
        _MLFLOW_SGI_NAME,
        MLFLOW_ENABLE_WORKSPACES,
    )
    from mlflow.server import constants
    from mlflow.utils.server_cli_utils import resolve_default_artifact_root

    env = {
        constants.BACKEND_STORE_URI_ENV_VAR: backend_store_uri,
        constants.REGISTRY_STORE_URI_ENV_VAR: backend_store_uri,  # the CLI's default: the registry in the same store
        constants.ARTIFACT_ROOT_ENV_VAR: resolve_default_artifact_root(
            serve_artifacts, default_artifact_root, backend_store_uri
        ),
        _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,
        _MLFLOW_IN_JOB_EXECUTOR.name: "false",
        _MLFLOW_SGI_NAME.name: "uvicorn",
        MLFLOW_ENABLE_WORKSPACES.name: "false",
    }
    if serve_artifacts:
        env[constants.SERVE_ARTIFACTS_ENV_VAR] = "true"
    if artifacts_destination:
        env[constants.ARTIFACTS_DESTINATION_ENV_VAR] = artifacts_destination
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", required=True)
    parser.add_argument("--artifacts-destination", help="proxied artifacts: the server writes them here")
    parser.add_argument("--default-artifact-root", help="with --no-serve-artifacts: clients write them here")
    parser.add_argument("--no-serve-artifacts", dest="serve_artifacts", action="store_false")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    env = server_environment(
        args.backend_store_uri, args.serve_artifacts, args.artifacts_destination, args.default_artifact_root
    )
    os.environ.update(env)
    import uvicorn
    from mlflow.server import _UVICORN_LOG_CONFIG
    from mlflow.server.constants import ARTIFACT_ROOT_ENV_VAR
    from mlflow.server.handlers import initialize_backend_stores
    from mlflow.tracing.trace_rollup_service import validate_sql_trace_rollup_startup

    initialize_backend_stores(args.backend_store_uri, args.backend_store_uri, env[ARTIFACT_ROOT_ENV_VAR])
    validate_sql_trace_rollup_startup(args.backend_store_uri)
    uvicorn.run("mlflow.server.fastapi_app:app", host=args.host, port=args.port, log_config=str(_UVICORN_LOG_CONFIG))


if __name__ == "__main__":
    main()
