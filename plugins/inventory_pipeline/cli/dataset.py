"""`inventory-pipeline seed-synthetic` and `inventory-pipeline dataset build`."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from inventory_pipeline.settings import Settings

log = logging.getLogger(__name__)


def _s3(args: argparse.Namespace, workers: int = Settings.copy_workers) -> Any:
    from inventory_pipeline.aws.clients import make_client

    endpoint = args.endpoint_url or os.environ.get("INVENTORY_S3_ENDPOINT") or None
    return make_client("s3", endpoint_url=endpoint, region_name=args.region, max_pool_connections=workers + 4)


def _balance(text: str) -> dict[int, float] | None:
    if not text:
        return None
    try:
        return {int(k): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--balance expects e.g. 1=0.2,2=0.3,... ({exc})") from exc


def register(subparsers: argparse._SubParsersAction) -> None:
    seed = subparsers.add_parser("seed-synthetic", help="write synthetic ABID-like data in the public layout")
    seed.add_argument("--bucket", required=True)
    seed.add_argument("--prefix", default="")
    seed.add_argument("--images", type=int, default=600)
    seed.add_argument("--seed", type=int, default=0)
    seed.add_argument("--balance", type=_balance, default=None, help="class weights: 1=0.2,2=0.3,...")
    seed.add_argument("--endpoint-url", default=None)
    seed.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    seed.add_argument("--json", action="store_true")
    seed.set_defaults(handler=_seed)

    dataset = subparsers.add_parser("dataset", help="the data plane: select, copy and split")
    dataset_sub = dataset.add_subparsers(dest="action", required=True)
    build = dataset_sub.add_parser("build", help="select + copy + split; prints the manifest summary")
    build.add_argument("--source-bucket", required=True)
    build.add_argument("--source-prefix", default="")
    build.add_argument("--file-list", default="", help="local path or s3:// URI of a file_list.json")
    build.add_argument("--bucket", required=True, help="the project's bucket")
    build.add_argument("--prefix", default="abid")
    build.add_argument("--per-class-limit", type=int, default=0, help="at most N images per count (0: all)")
    build.add_argument("--workers", type=int, default=Settings.copy_workers, help="parallel S3 requests")
    build.add_argument("--reject-threshold", type=float, default=0.05, help="refuse above this reject ratio")
    build.add_argument("--endpoint-url", default=None)
    build.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    build.add_argument("--json", action="store_true")
    build.set_defaults(handler=_build)


def _seed(args: argparse.Namespace) -> int:
    from inventory_pipeline.cli import print_json
    from inventory_pipeline.dataset.seed import seed_synthetic

    result = seed_synthetic(_s3(args), args.bucket, args.prefix, args.images, args.seed, args.balance)
    print(f"seeded s3://{args.bucket}/{args.prefix} with {result['images']} images {result['counts']}")
    if args.json:
        print_json(result)
    return 0


SUMMARY_KEYS = (
    "version",
    "counts",
    "copied",
    "skipped",
    "rejected",
    "manifest_key",
    "channels",
    "raw",
    "split",
    "selected",
    "new",
    "excluded",
)


def _build(args: argparse.Namespace) -> int:
    from inventory_pipeline.cli import print_json
    from inventory_pipeline.dataset.errors import DatasetError, TooManyRejects
    from inventory_pipeline.dataset.stages import build_dataset
    from inventory_pipeline.settings import SettingsError

    try:
        settings = Settings(
            source_bucket=args.source_bucket,
            source_prefix=args.source_prefix,
            file_list=args.file_list,
            per_class_limit=args.per_class_limit,
            bucket=args.bucket,
            prefix=args.prefix,
            copy_workers=args.workers,
            reject_threshold=args.reject_threshold,
            allow_local_file_list=True,  # a person's own command on their own machine: their own files
        )
        summary = build_dataset(_s3(args, args.workers), settings)
    except (DatasetError, SettingsError) as exc:
        print(f"refused: {exc}")
        if args.json:
            rejects = exc.rejects if isinstance(exc, TooManyRejects) else []
            first_line = str(exc).splitlines()[0]
            print_json({"error": type(exc).__name__, "message": first_line, "rejected": rejects})
        return 2
    print(f"dataset {summary['version']}: {summary['counts']}")
    print(f"copied {summary['copied']}, skipped {summary['skipped']}, rejected {len(summary['rejected'])}")
    print(f"manifest s3://{args.bucket}/{summary['manifest_key']}")
    if args.json:
        print_json({k: summary[k] for k in SUMMARY_KEYS})
    return 0
