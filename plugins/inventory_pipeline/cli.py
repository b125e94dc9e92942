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

DEFAULT_STATE_DIR = Path("build") / "local-stack"

# Modules that add sub-commands: each has `register(subparsers) -> None`; handlers return an exit code.
COMMAND_MODULES = (
    "inventory_pipeline.cli",
    "inventory_pipeline.dataset.cli",
    "inventory_pipeline.training.cli",
    "inventory_pipeline.model_cli",
    "inventory_pipeline.storage.cli",
)


def print_json(payload: Any) -> None:
    print(json.dumps(payload, sort_keys=True, default=str))


def register(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser("local-stack", help="start/stop the local AWS stack (moto + local SageMaker)")
    stack_sub = stack.add_subparsers(dest="action", required=True)
    for action, help_text in (("up", "start it and print the endpoints"), ("down", "stop what `up` started")):
        parser = stack_sub.add_parser(action, help=help_text)
        parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    up = stack_sub.choices["up"]
    up.add_argument("--region", default="us-east-1")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    up.add_argument("--advertise-host", default=None, help="host name clients use (a compose service name)")
    up.add_argument("--moto-port", type=int, default=0, help="fixed port for moto (default: a free one)")
    up.add_argument("--sagemaker-port", type=int, default=0, help="fixed port for the local SageMaker server")
    up.add_argument("--foreground", action="store_true", help="stay attached; stop everything on SIGTERM")
    stack_sub.choices["up"].set_defaults(handler=_stack_up)
    stack_sub.choices["down"].set_defaults(handler=_stack_down)


def _stack_up(args: argparse.Namespace) -> int:
    from inventory_pipeline.local_aws import stack

    options = {
        "bind_host": args.host,
        "advertise_host": args.advertise_host,
        "ports": {name: port for name, port in (("moto", args.moto_port), ("sagemaker", args.sagemaker_port)) if port},
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
    for service, url in sorted(state["endpoints"].items()):
        print(f"{service:10s} {url}")
    print(f"export AIRFLOW_CONN_AWS_DEFAULT='{conn}'")
    if state.get("state_file"):
        print(f"state file: {state['state_file']}  (stop with: inventory-pipeline local-stack down)")
    if args.json:
        print_json({k: state[k] for k in ("endpoints", "airflow_conn", "state_file")})


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
