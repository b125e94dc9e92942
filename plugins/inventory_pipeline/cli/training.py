"""`inventory-pipeline request`: the validated CreateTrainingJob request the DAG would send (a dry run)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("request", help="print the validated CreateTrainingJob request for some Params")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a DAG Param, e.g. --param epochs=5 --param rules_mode=self_hosted",
    )
    parser.add_argument("--run-id", default="manual__dry-run")
    parser.add_argument(
        "--dataset-version",
        default="DATASET-VERSION",
        help="the dataset version the channels point at (known after split_dataset)",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_request)

    pretrained = subparsers.add_parser("pretrained", help="the pretrained checkpoint in the project bucket")
    actions = pretrained.add_subparsers(dest="action", required=True)
    upload = actions.add_parser(
        "upload",
        help="upload build/pretrained/* once (content-addressed); prints the s3:// URI for INVENTORY_PRETRAINED_S3_URI",
    )
    upload.add_argument("--dir", type=Path, default=Path("build") / "pretrained")
    upload.add_argument("--json", action="store_true")
    upload.set_defaults(handler=_pretrained_upload)


def _pretrained_upload(args: argparse.Namespace) -> int:
    from inventory_pipeline.aws.clients import client_from_connection
    from inventory_pipeline.cli import print_json
    from inventory_pipeline.settings import Settings
    from inventory_pipeline.training.offline import upload_pretrained

    settings = Settings.from_sources({})
    s3 = client_from_connection("s3", settings.aws_conn_id)
    uri = upload_pretrained(s3, settings.bucket, settings.root, args.dir)
    if args.json:
        print_json({"pretrained_s3_uri": uri})
    else:
        print(f"uploaded; set INVENTORY_PRETRAINED_S3_URI={uri}")
    return 0


def _request(args: argparse.Namespace) -> int:
    from inventory_pipeline.cli import print_json
    from inventory_pipeline.dataset.split import channels
    from inventory_pipeline.settings import Settings
    from inventory_pipeline.training.naming import job_name_for_run
    from inventory_pipeline.training.package import build_sourcedir
    from inventory_pipeline.training.request import build_training_request

    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--param expects NAME=VALUE, got {item!r}")
        params[name] = json.loads(value) if value[:1] in "[{" else value
    settings = Settings.from_sources(params)
    sha = hashlib.sha256(build_sourcedir()).hexdigest()
    sourcedir = f"s3://{settings.bucket}/{settings.root}code/sourcedir-{sha[:16]}.tar.gz"
    request = build_training_request(
        settings,
        job_name_for_run("inventory_retraining", args.run_id),
        channels(settings.bucket, settings.root, args.dataset_version),
        sourcedir,
        run_id=args.run_id,
    )
    if args.json:
        print_json(request)
    else:
        print(json.dumps(request, indent=2, sort_keys=True))
    return 0
