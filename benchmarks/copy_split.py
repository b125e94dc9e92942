"""The study's data preparation vs the pipeline's copy + split, side by side in one run.

Starts its own local stack, seeds N synthetic images in the public bucket's layout, and times:
  (a) the study's way: for each image, download it, then upload it into a split layout, one after another;
  (b) the pipeline: select + validate + server-side parallel copy + stable split (build_dataset);
  (c) an immediate re-run of (b).
The same per-request latency (a botocore hook that sleeps before each request, modelling a network round
trip) is injected into both. Prints one JSON object:
  images, latency_ms, sequential_s, pipeline_s, speedup, rerun_copies, rerun_s, rerun_ratio
Targets: speedup >= 10 at 50 ms, rerun_copies == 0, rerun_ratio <= 0.05.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from inventory_pipeline.aws_clients import make_client
from inventory_pipeline.dataset.seed import seed_synthetic
from inventory_pipeline.dataset.select import parse_file_list
from inventory_pipeline.dataset.split import assign_split
from inventory_pipeline.dataset.stages import build_dataset
from inventory_pipeline.local_aws.stack import MOTO, LocalStack
from inventory_pipeline.settings import Settings

SOURCE, DEST = "bench-source", "bench-project"


def add_latency(client, latency_ms: float) -> None:
    def sleep(**_):
        time.sleep(latency_ms / 1000)

    client.meta.events.register("before-send", sleep)


def study_way(s3, pairs) -> float:
    """Sequential download of each image, then upload into `<split>/<label>/<id>.jpg` (the notebook's way)."""
    started = time.perf_counter()
    for pair in pairs:
        body = s3.get_object(Bucket=SOURCE, Key=f"bin-images/{pair.image_id}.jpg")["Body"].read()
        split = assign_split(pair.image_id)
        s3.put_object(Bucket=DEST, Key=f"study/{split}/{pair.label}/{pair.image_id}.jpg", Body=body)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp), servers=[MOTO]) as stack:
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}

        def client():
            return make_client("s3", stack.endpoints["s3"], stack.region, args.workers + 4, **creds)

        setup = client()
        seed_synthetic(setup, SOURCE, images=args.images, seed=3)
        setup.create_bucket(Bucket=DEST)
        pairs = parse_file_list(json.loads(setup.get_object(Bucket=SOURCE, Key="file_list.json")["Body"].read()))

        s3 = client()
        add_latency(s3, args.latency_ms)
        settings = Settings(source_bucket=SOURCE, file_list=f"s3://{SOURCE}/file_list.json", bucket=DEST,
                            prefix="pipeline", copy_workers=args.workers)  # fmt: skip
        sequential_s = study_way(s3, pairs)
        started = time.perf_counter()
        first = build_dataset(s3, settings)
        pipeline_s = time.perf_counter() - started
        started = time.perf_counter()
        rerun = build_dataset(s3, settings)
        rerun_s = time.perf_counter() - started

    result = {
        "images": args.images,
        "latency_ms": args.latency_ms,
        "workers": args.workers,
        "sequential_s": round(sequential_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "speedup": round(sequential_s / pipeline_s, 2),
        "pipeline_copies": first["copied"],
        "rerun_copies": rerun["copied"],
        "rerun_s": round(rerun_s, 3),
        "rerun_ratio": round(rerun_s / pipeline_s, 4),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
