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
)


def print_json(payload: Any) -> None:
    print(json.dumps(payload, sort_keys=True, default=str))


def register(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser(
        "local-stack", help="start/stop the local AWS stack (moto + local SageMaker)"
    )
    stack_sub = stack.add_subparsers(dest="action", required=True)
    for action, help_text in (("up", "start it and print the endpoints"), ("down", "stop what `up` started")):
        parser = stack_sub.add_parser(action, help=help_text)
        parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    stack_sub.choices["up"].add_argument("--region", default="us-east-1")
    stack_sub.choices["up"].set_defaults(handler=_stack_up)
    stack_sub.choices["down"].set_defaults(handler=_stack_down)


def _stack_up(args: argparse.Namespace) -> int:
    from inventory_pipeline.local_aws import stack

    state = stack.up(args.state_dir, region=args.region)
    conn = json.dumps(state["airflow_conn"])
    for service, url in sorted(state["endpoints"].items()):
        print(f"{service:10s} {url}")
    print(f"export AIRFLOW_CONN_AWS_DEFAULT='{conn}'")
    print(f"state file: {state['state_file']}  (stop with: inventory-pipeline local-stack down)")
    if args.json:
        print_json({k: state[k] for k in ("endpoints", "airflow_conn", "state_file")})
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
