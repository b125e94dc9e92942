"""`inventory-pipeline model list|rollback`: the registry as people use it.

Both read the deployment's settings (INVENTORY_TRACKING_URI, INVENTORY_BUCKET, INVENTORY_PREFIX, the
`aws_default` connection) exactly as the DAG does. A rollback moves the `champion` alias and the deployable
copy in S3, and is recorded as a decision like any run's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
from typing import Any

from inventory_pipeline.decisions import ROLLED_BACK, DecisionStore, now_iso
from inventory_pipeline.promotion import follow_registry
from inventory_pipeline.tracking import Registry


def list_versions(registry: Registry) -> list[dict[str, Any]]:
    return [v.to_dict() for v in registry.versions()]


def rollback(s3: Any, bucket: str, root: str, registry: Registry, version: str, who: str) -> dict[str, Any]:
    """Make `version` the champion again; the decision is recorded first, then applied."""
    target = next((v for v in registry.versions() if v.version == str(version)), None)
    if target is None:
        known = ", ".join(v.version for v in registry.versions()) or "none"
        raise ValueError(f"{registry.model_name} has no version {version} (versions: {known})")
    current = registry.champion()
    key = f"rollback-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-v{target.version}"
    record = {
        "job": key, "status": ROLLED_BACK, "decided": now_iso(), "by": who,
        "reason": f"rolled back by {who}: champion v{current.version if current else 'none'} -> v{target.version}",
        "candidate": None, "champion": target.to_dict(), "previous_champion": current.to_dict() if current else None,
    }  # fmt: skip
    store = DecisionStore(s3, bucket, root)
    record, _ = store.create(key, record)
    registry.set_champion(target.version)
    follow_registry(s3, bucket, root, registry.champion())
    store.create(key, {"applied": now_iso()}, "applied")
    return record


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="the model registry: list versions, roll the champion back")
    actions = model.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="versions with aliases, decision, accuracy, dataset version, job")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    back = actions.add_parser("rollback", help="make an earlier version the champion again (recorded)")
    back.add_argument("--to", required=True, dest="version", help="the registry version")
    back.add_argument("--json", action="store_true")
    back.set_defaults(handler=_rollback)


def _deployment():
    from inventory_pipeline.dag_tasks import registry_for, settings_from

    settings = settings_from({})
    return settings, registry_for(settings)


def _list(args: argparse.Namespace) -> int:
    from inventory_pipeline.cli import print_json

    _, registry = _deployment()
    versions = list_versions(registry)
    for v in versions:
        aliases = ",".join(v["aliases"]) or "-"
        print(f"v{v['version']:>3} {aliases:9s} {v.get('decision') or '-':11s} accuracy {v.get('accuracy') or '-':8s} "
              f"dataset {v.get('dataset_version') or '-'}  code {(v.get('code_sha256') or '-')[:12]}  job {v['job']}")
    if args.json:
        print_json({"model": registry.model_name, "versions": versions})
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from inventory_pipeline.aws_clients import client_from_connection
    from inventory_pipeline.cli import print_json

    settings, registry = _deployment()
    s3 = client_from_connection("s3", settings.aws_conn_id)
    record = rollback(s3, settings.bucket, settings.root, registry, args.version, who=getpass.getuser())
    print(record["reason"])
    if args.json:
        print_json(record)
    return 0
