"""`inventory-pipeline storage gc`: free old dataset versions, staging leftovers and old jobs' debug tensors."""

from __future__ import annotations

import argparse
import os

from inventory_pipeline.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    storage = subparsers.add_parser("storage", help="housekeeping of the project bucket")
    storage_sub = storage.add_subparsers(dest="action", required=True)
    gc = storage_sub.add_parser("gc", help="remove old dataset versions, staging leftovers, old debug tensors")
    gc.add_argument("--keep-versions", type=int, required=True, help="newest complete dataset versions to keep")
    gc.add_argument("--dry-run", action="store_true", help="report what would be deleted; delete nothing")
    gc.add_argument("--bucket", default=os.environ.get("INVENTORY_BUCKET", Settings.bucket))
    gc.add_argument("--prefix", default=os.environ.get("INVENTORY_PREFIX", Settings.prefix))
    gc.add_argument("--grace-hours", type=float, default=24.0, help="never touch what is younger (runs in flight)")
    gc.add_argument("--staging-days", type=float, default=7.0, help="staging documents expire after this")
    gc.add_argument("--endpoint-url", default=os.environ.get("INVENTORY_S3_ENDPOINT") or None)
    gc.add_argument(
        "--sagemaker-endpoint-url",
        default=os.environ.get("INVENTORY_SAGEMAKER_ENDPOINT") or None,
        help="to map a model's training job to its dataset version (DescribeTrainingJob)",
    )
    gc.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    gc.add_argument("--json", action="store_true")
    gc.set_defaults(handler=_gc)


def _gc(args: argparse.Namespace) -> int:
    from inventory_pipeline.aws.clients import make_client
    from inventory_pipeline.cli import print_json
    from inventory_pipeline.dataset.errors import DatasetError
    from inventory_pipeline.storage.gc import GcRefused, collect, sagemaker_job_versions

    if args.keep_versions < 1:
        print("refused: --keep-versions must be at least 1")
        return 2
    root = Settings(bucket=args.bucket, prefix=args.prefix).root
    s3 = make_client("s3", endpoint_url=args.endpoint_url, region_name=args.region)
    sagemaker = make_client("sagemaker", endpoint_url=args.sagemaker_endpoint_url, region_name=args.region)
    try:
        report = collect(
            s3,
            args.bucket,
            root,
            args.keep_versions,
            dry_run=args.dry_run,
            job_versions=sagemaker_job_versions(sagemaker),
            grace_hours=args.grace_hours,
            staging_days=args.staging_days,
        )
    except (GcRefused, DatasetError) as exc:
        print(f"refused: {exc}")
        if args.json:
            print_json({"error": type(exc).__name__, "message": str(exc)})
        return 2
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {len(report.keys)} objects ({report.bytes} bytes): {report.deleted}; "
        f"kept versions {report.kept_versions}"
    )
    if args.json:
        print_json(report.to_dict())
    return 0
