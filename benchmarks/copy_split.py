"""The study's data preparation vs the pipeline's copy + split, side by side in one run.

Starts its own local stack, seeds N synthetic images in the public bucket's layout, and times:
  (a) the study's way: for each image, download it, then upload it into a split layout, one after another;
  (b) the pipeline: select + validate (each photo read once) + store in packs + publish the version's description
      (labels + ManifestFiles, no copies) (build_dataset);
  (c) an immediate re-run of (b), with the default settings: it reuses (b)'s source listing (dataset/source_check.py,
      source_recheck_minutes);
  (d) the same re-run with source_recheck_minutes=0: the source listed again, as a run an hour later does.
The same per-request latency (a botocore hook that sleeps before each request is sent, modelling a network
round trip) is injected into both. Prints one JSON object:
  images, latency_ms, sequential_s, pipeline_s, speedup, rerun_copies, rerun_s, rerun_ratio, relisted_rerun_s,
  relisted_rerun_ratio
plus what explains them: requests per image on each side, and the CPU seconds the S3 server (moto) and this
client spent during (b): on a small machine the pipeline is bound by the emulator's CPU, not by latency.
Targets: speedup >= 15 at 50 ms, requests_per_image.pipeline <= 2.5, rerun_copies == 0, rerun_ratio <= 0.03.

--sequential-images K times (a) on the first K images only and extrapolates linearly to N (the output then
says so: sequential_measured_images and sequential_s_per_image).
The local stack's moto runs with two of its per-request costs removed (inventory_pipeline.local_aws.moto_server:
a package-directory scan done once, access log for server errors only); (a) and (b) run against that same server.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from inventory_pipeline.aws.clients import make_client
from inventory_pipeline.dataset.abid import Pair
from inventory_pipeline.dataset.s3io import Progress
from inventory_pipeline.dataset.seed import seed_synthetic
from inventory_pipeline.dataset.select import parse_file_list
from inventory_pipeline.dataset.split import assign_split
from inventory_pipeline.dataset.stages import build_dataset
from inventory_pipeline.local_aws.stack import MOTO, LocalStack
from inventory_pipeline.settings import Settings

SOURCE, DEST, STUDY = "bench-source", "bench-project", "bench-study"
log = logging.getLogger("benchmark")


class Network:
    """Sleeps before each request is sent (a round trip) and counts requests per operation."""

    def __init__(self, latency_ms: float):
        self.latency_s = latency_ms / 1000
        self.calls: Counter[str] = Counter()

    def attach(self, client) -> None:
        client.meta.events.register("before-send", self._send)
        client.meta.events.register("before-call", self._call)

    def _send(self, **_) -> None:
        time.sleep(self.latency_s)

    def _call(self, model, **_) -> None:
        self.calls[model.name] += 1

    def take(self) -> dict[str, int]:
        counted, self.calls = dict(self.calls), Counter()
        return counted


def study_way(s3, pairs: list[Pair]) -> float:
    """Sequential download of each image, then upload into `<split>/<label>/<id>.jpg` (the notebook's way)."""
    progress = Progress("study's way (sequential)", len(pairs))
    started = time.perf_counter()
    for pair in pairs:
        body = s3.get_object(Bucket=SOURCE, Key=f"bin-images/{pair.image_id}.jpg")["Body"].read()
        split = assign_split(pair.image_id)
        s3.put_object(Bucket=STUDY, Key=f"{split}/{pair.label}/{pair.image_id}.jpg", Body=body)
        progress.step()
    return time.perf_counter() - started


def cpu_seconds(processes) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=Settings.copy_workers)
    parser.add_argument("--sequential-images", type=int, default=0, help="time (a) on K images, extrapolate")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(message)s")
    for name in ("benchmark", "inventory_pipeline.dataset.s3io"):
        logging.getLogger(name).setLevel(logging.INFO)  # progress of the long phases, on stderr

    import psutil

    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp), servers=[MOTO]) as stack:
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}

        def client():
            return make_client("s3", stack.endpoints["s3"], stack.region, args.workers + 4, **creds)

        setup = client()
        log.info("seeding %d synthetic images", args.images)
        seed_synthetic(setup, SOURCE, images=args.images, seed=3)
        setup.create_bucket(Bucket=DEST)
        setup.create_bucket(Bucket=STUDY)  # its own bucket: the study's objects do not slow moto's listings of DEST
        pairs = parse_file_list(json.loads(setup.get_object(Bucket=SOURCE, Key="file_list.json")["Body"].read()))

        network = Network(args.latency_ms)
        s3 = client()
        network.attach(s3)
        settings = Settings(
            source_bucket=SOURCE,
            file_list=f"s3://{SOURCE}/file_list.json",
            bucket=DEST,
            prefix="pipeline",
            copy_workers=args.workers,
        )

        measured = pairs[: args.sequential_images] if args.sequential_images else pairs
        measured_s = study_way(s3, measured)
        sequential_s = measured_s * len(pairs) / len(measured)
        sequential_calls = network.take()

        servers, me = psutil.Process().children(recursive=True), psutil.Process()
        server_cpu, client_cpu = cpu_seconds(servers), cpu_seconds([me])
        log.info("pipeline: build_dataset with %d workers", args.workers)
        started = time.perf_counter()
        first = build_dataset(s3, settings)
        pipeline_s = time.perf_counter() - started
        server_cpu, client_cpu = cpu_seconds(servers) - server_cpu, cpu_seconds([me]) - client_cpu
        pipeline_calls = network.take()

        started = time.perf_counter()
        rerun = build_dataset(s3, settings)
        rerun_s = time.perf_counter() - started
        rerun_calls = network.take()

        started = time.perf_counter()
        relisted = build_dataset(s3, dataclasses.replace(settings, source_recheck_minutes=0))
        relisted_s = time.perf_counter() - started
        relisted_calls = network.take()

    result = {
        "images": args.images,
        "latency_ms": args.latency_ms,
        "workers": args.workers,
        "server": "moto (inventory_pipeline.local_aws.moto_server)",
        "sequential_s": round(sequential_s, 2),
        "pipeline_s": round(pipeline_s, 2),
        "speedup": round(sequential_s / pipeline_s, 2),
        "pipeline_copies": first["copied"],
        "rerun_copies": rerun["copied"],
        "rerun_s": round(rerun_s, 3),
        "rerun_ratio": round(rerun_s / pipeline_s, 4),
        "rerun_source_listing": rerun["source_listing"],
        "relisted_rerun_copies": relisted["copied"],
        "relisted_rerun_s": round(relisted_s, 3),
        "relisted_rerun_ratio": round(relisted_s / pipeline_s, 4),
        "requests_per_image": {
            "sequential": round(sum(sequential_calls.values()) / len(measured), 2),
            "pipeline": round(sum(pipeline_calls.values()) / args.images, 2),
        },
        "pipeline_requests": pipeline_calls,
        "rerun_requests": rerun_calls,
        "relisted_rerun_requests": relisted_calls,
        "pipeline_server_cpu_s": round(server_cpu, 2),
        "pipeline_client_cpu_s": round(client_cpu, 2),
    }
    if args.sequential_images:
        result["sequential_measured_images"] = len(measured)
        result["sequential_s_per_image"] = round(measured_s / len(measured), 4)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
