"""`inventory-pipeline`: the non-Airflow parts of the pipeline for people and scripts.

Each area of the package registers its own sub-commands (a `register(subparsers)` function in the module
named in COMMAND_MODULES); this file only assembles them. Commands with `--json` print one JSON object as
their last line of output.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[3]
# Absolute, so every command finds the same stack whatever directory it is run from.
DEFAULT_STATE_DIR = PROJECT_ROOT / "build" / "local-stack"
LOCAL_AIRFLOW_HOME = PROJECT_ROOT / "build" / "airflow-local"
LOCAL_PROJECT_BUCKET = "inventory-retraining"

# Modules that add sub-commands: each has `register(subparsers) -> None`; handlers return an exit code.
COMMAND_MODULES = (
    "inventory_pipeline.cli",
    "inventory_pipeline.cli.dataset",
    "inventory_pipeline.cli.training",
    "inventory_pipeline.cli.model",
    "inventory_pipeline.cli.storage",
)


def print_json(payload: Any) -> None:
    print(json.dumps(payload, sort_keys=True, default=str))


def register(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser("local-stack", help="start/stop the local AWS stack (moto + local SageMaker)")
    stack_sub = stack.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("up", "start it (or find it running) and print the endpoints"),
        ("down", "stop what `up` started"),
        ("env", 'print the exports a shell needs: eval "$(inventory-pipeline local-stack env)"'),
        ("ui", "run Airflow (standalone) on the running stack and print its URL and login"),
    ):
        parser = stack_sub.add_parser(action, help=help_text)
        parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    up = stack_sub.choices["up"]
    up.add_argument("--region", default="us-east-1")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    up.add_argument("--advertise-host", default=None, help="host name clients use (a compose service name)")
    up.add_argument("--moto-port", type=int, default=0, help="fixed port for moto (default: a free one)")
    up.add_argument("--sagemaker-port", type=int, default=0, help="fixed port for the local SageMaker server")
    up.add_argument("--mlflow-port", type=int, default=0, help="fixed port for the MLflow tracking server")
    up.add_argument("--foreground", action="store_true", help="stay attached; stop everything on SIGTERM")
    stack_sub.choices["up"].set_defaults(handler=_stack_up)
    stack_sub.choices["down"].set_defaults(handler=_stack_down)
    stack_sub.choices["env"].set_defaults(handler=_stack_env)
    stack_sub.choices["ui"].set_defaults(handler=_stack_ui)
    stack_sub.choices["ui"].add_argument("--port", type=int, default=8080)


def _stack_up(args: argparse.Namespace) -> int:
    from inventory_pipeline.local_aws import stack

    options = {
        "bind_host": args.host,
        "advertise_host": args.advertise_host,
        "ports": {
            name: port
            for name, port in (
                ("moto", args.moto_port),
                ("sagemaker", args.sagemaker_port),
                ("mlflow", args.mlflow_port),
            )
            if port
        },
    }
    if args.foreground:
        return _stack_foreground(args, options)
    state = stack.up(args.state_dir, region=args.region, **options)
    _print_stack(args, state)
    return 0


def _stack_foreground(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """Run the stack until SIGTERM/SIGINT (the form a container or a supervisor wants)."""
    import signal
    import threading

    from inventory_pipeline.local_aws.stack import LocalStack

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with LocalStack(args.state_dir, region=args.region, **options) as running:
        state = running.state()
        state["state_file"] = None
        _print_stack(args, state)
        sys.stdout.flush()
        done.wait()
    print("local stack stopped")
    return 0


def _print_stack(args: argparse.Namespace, state: dict[str, Any]) -> None:
    conn = json.dumps(state["airflow_conn"])
    if state.get("already_running"):
        print("a local stack is already running: its settings")
    for service, url in sorted(state["endpoints"].items()):
        print(f"{service:10s} {url}")
    print(f"export AIRFLOW_CONN_AWS_DEFAULT='{conn}'")
    if state.get("state_file"):
        print(f"state file: {state['state_file']}  (stop with: inventory-pipeline local-stack down)")
    if args.json:
        print_json({k: state.get(k) for k in ("endpoints", "airflow_conn", "state_file", "already_running")})
    print('use it from a shell: eval "$(inventory-pipeline local-stack env)"')


def local_stack_env(state: dict[str, Any]) -> dict[str, str]:
    """What a shell needs to work on the running stack: the connection and credentials, an Airflow home
    (its database migrated), this project's DAG and plugin folders, and the project bucket (created)."""
    from inventory_pipeline.airflow.runner import airflow_env, db_migrate
    from inventory_pipeline.aws.clients import make_client
    from inventory_pipeline.local_aws.stack import client_env

    stack_env = client_env(state["endpoints"], state["region"])
    s3 = make_client(
        "s3",
        endpoint_url=state["endpoints"]["s3"],
        region_name=state["region"],
        aws_access_key_id=stack_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack_env["AWS_SECRET_ACCESS_KEY"],
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if LOCAL_PROJECT_BUCKET not in existing:
        s3.create_bucket(Bucket=LOCAL_PROJECT_BUCKET)
    extra = {
        **stack_env,
        "INVENTORY_BUCKET": LOCAL_PROJECT_BUCKET,
        "INVENTORY_POKE_INTERVAL_S": "4",  # local jobs take minutes: poll every few seconds
        "INVENTORY_SCHEDULE": "none",
    }
    env = airflow_env(LOCAL_AIRFLOW_HOME, extra)
    if not (LOCAL_AIRFLOW_HOME / "airflow.db").exists():
        logging.getLogger(__name__).info("migrating Airflow's database in %s", LOCAL_AIRFLOW_HOME)
        db_migrate(env)
    names = [
        *extra,
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__PLUGINS_FOLDER",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION",
    ]
    return {name: env[name] for name in names}


def _stack_ui(args: argparse.Namespace) -> int:
    """`airflow standalone` (api-server, scheduler, dag-processor, triggerer) on the running stack."""
    import os
    import subprocess

    from inventory_pipeline.airflow.runner import airflow_bin
    from inventory_pipeline.local_aws import stack

    state = stack.running_state(args.state_dir)
    if state is None:
        print("no local stack is running: start it with `inventory-pipeline local-stack up`", file=sys.stderr)
        return 1
    user, password = "admin", "admin"
    env = {**os.environ, **local_stack_env(state)}
    env.update(
        {
            "PATH": f"{Path(airflow_bin()).parent}:{os.environ.get('PATH', '')}",  # standalone starts `airflow ...`
            "AIRFLOW__API__PORT": str(args.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{args.port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "INVENTORY_DEFERRABLE": "true",  # standalone runs a triggerer
        }
    )
    (LOCAL_AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({user: password}))
    print(
        f"Airflow UI: http://127.0.0.1:{args.port}  login: {user} / {password}  (Ctrl-C stops Airflow; "
        "`inventory-pipeline local-stack down` stops the stack)",
        flush=True,
    )
    try:
        return subprocess.run([airflow_bin(), "standalone"], env=env).returncode
    except KeyboardInterrupt:
        return 0


def _stack_env(args: argparse.Namespace) -> int:
    import shlex

    from inventory_pipeline.local_aws import stack

    state = stack.running_state(args.state_dir)
    if state is None:
        print(
            f"no local stack is running (state dir {args.state_dir}): start it with "
            "`inventory-pipeline local-stack up`",
            file=sys.stderr,
        )
        return 1
    for name, value in local_stack_env(state).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _stack_down(args: argparse.Namespace) -> int:
    from inventory_pipeline.local_aws import stack

    stopped = stack.down(args.state_dir)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    if args.json:
        print_json({"stopped": stopped})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inventory-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for people; the traceback with -v
        logging.getLogger("inventory_pipeline").debug("command failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
