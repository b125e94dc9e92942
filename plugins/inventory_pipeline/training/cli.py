"""`inventory-pipeline request`: the validated CreateTrainingJob request the DAG would send (a dry run)."""

from __future__ import annotations

import argparse
import hashlib
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("request", help="print the validated CreateTrainingJob request for some Params")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a DAG Param, e.g. --param epochs=5 --param rules_mode=self_hosted")  # fmt: skip
    parser.add_argument("--run-id", default="manual__dry-run")
    parser.add_argument("--dataset-version", default="DATASET-VERSION",
                        help="the dataset version the channels point at (known after split_dataset)")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_request)


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
        settings, job_name_for_run("inventory_retraining", args.run_id),
        channels(settings.bucket, settings.root, args.dataset_version), sourcedir, run_id=args.run_id,
    )  # fmt: skip
    if args.json:
        print_json(request)
    else:
        print(json.dumps(request, indent=2, sort_keys=True))
    return 0
