"""`inventory-pipeline model list|rollback|release`: the registry as people use it.

All read the deployment's settings (INVENTORY_TRACKING_URI, INVENTORY_BUCKET, INVENTORY_PREFIX, the
`aws_default` connection) exactly as the DAG does. A rollback moves the `champion` alias and the deployable
copy in S3 and holds that version (later runs end `held` until `model release`); each is recorded as a decision
like any run's, and both take the champion lease the gate's apply takes, so neither undoes the other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
from typing import Any

from inventory_pipeline.decision.apply import follow_registry
from inventory_pipeline.decision.decide import RELEASED, ROLLED_BACK, now_iso
from inventory_pipeline.decision.lease import ChampionLease, clear_hold, read_hold, set_hold
from inventory_pipeline.decision.registry import Registry
from inventory_pipeline.decision.store import DecisionStore


def list_versions(registry: Registry, hold: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each version with its aliases as the registry has them, and `held` (who held it, when) for the one held."""
    return [
        {**v.to_dict(), "held": hold if hold and hold["version"] == v.version else None} for v in registry.versions()
    ]


def rollback(s3: Any, bucket: str, root: str, registry: Registry, version: str, who: str) -> dict[str, Any]:
    """Make `version` the champion again and hold it there; the decision is recorded first, then applied."""
    target = next((v for v in registry.versions() if v.version == str(version)), None)
    if target is None:
        known = ", ".join(v.version for v in registry.versions()) or "none"
        raise ValueError(f"{registry.model_name} has no version {version} (versions: {known})")
    with ChampionLease(s3, bucket, root, f"model rollback by {who}"):
        current = registry.champion()
        key = f"rollback-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-v{target.version}"
        record = {
            "job": key,
            "status": ROLLED_BACK,
            "decided": now_iso(),
            "by": who,
            "reason": f"rolled back by {who}: champion v{current.version if current else 'none'} -> "
            f"v{target.version}, held until `inventory-pipeline model release`",
            "candidate": None,
            "champion": target.to_dict(),
            "previous_champion": current.to_dict() if current else None,
        }
        store = DecisionStore(s3, bucket, root)
        record, _ = store.create(key, record)
        set_hold(s3, bucket, root, target.version, who, record["reason"])
        registry.set_champion(target.version)
        follow_registry(s3, bucket, root, registry.champion())
        store.create(key, {"applied": now_iso()}, "applied")
    return record


def release(s3: Any, bucket: str, root: str, registry: Registry, who: str) -> dict[str, Any]:
    """End the hold: the next run may promote again. Recorded as a decision; nothing else changes."""
    with ChampionLease(s3, bucket, root, f"model release by {who}"):
        hold = read_hold(s3, bucket, root)
        if hold is None:
            raise ValueError("no version is held")
        key = f"release-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-v{hold['version']}"
        champion = registry.champion()
        record = {
            "job": key,
            "status": RELEASED,
            "decided": now_iso(),
            "by": who,
            "candidate": None,
            "champion": champion.to_dict() if champion else None,
            "hold": hold,
            "reason": f"released by {who}: v{hold['version']} (held by {hold.get('by')} since {hold.get('at')}) "
            "is no longer held; the next run may promote",
        }
        record, _ = DecisionStore(s3, bucket, root).create(key, record)
        clear_hold(s3, bucket, root, who)
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
    free = actions.add_parser("release", help="end the hold a rollback set: the next run may promote (recorded)")
    free.add_argument("--json", action="store_true")
    free.set_defaults(handler=_release)


def _deployment():
    from inventory_pipeline.decision.registry import registry_for
    from inventory_pipeline.settings import settings_from

    settings = settings_from({})
    return settings, registry_for(settings)


def _list(args: argparse.Namespace) -> int:
    from inventory_pipeline.cli import print_json

    settings, registry = _deployment()
    hold = read_hold(_s3(settings), settings.bucket, settings.root)
    versions = list_versions(registry, hold)
    if hold:
        print(f"v{hold['version']} is held as champion by {hold.get('by')} since {hold.get('at')}")
    for v in versions:
        aliases = ",".join(v["aliases"] + (["held"] if v["held"] else [])) or "-"
        print(
            f"v{v['version']:>3} {aliases:9s} {v.get('decision') or '-':11s} accuracy {v.get('accuracy') or '-':8s} "
            f"dataset {v.get('dataset_version') or '-'}  code {(v.get('code_sha256') or '-')[:12]}  job {v['job']}"
        )
    if args.json:
        print_json({"model": registry.model_name, "hold": hold, "versions": versions})
    return 0


def _s3(settings: Any) -> Any:
    from inventory_pipeline.aws.clients import client_from_connection

    return client_from_connection("s3", settings.aws_conn_id)


def _rollback(args: argparse.Namespace) -> int:
    from inventory_pipeline.cli import print_json

    settings, registry = _deployment()
    record = rollback(_s3(settings), settings.bucket, settings.root, registry, args.version, who=getpass.getuser())
    print(record["reason"])
    if args.json:
        print_json(record)
    return 0


def _release(args: argparse.Namespace) -> int:
    from inventory_pipeline.cli import print_json

    settings, registry = _deployment()
    record = release(_s3(settings), settings.bucket, settings.root, registry, who=getpass.getuser())
    print(record["reason"])
    if args.json:
        print_json(record)
    return 0
