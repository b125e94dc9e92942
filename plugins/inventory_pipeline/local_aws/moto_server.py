"""moto's server (S3 + CloudWatch Logs of the embedded stack), started with two fixes to its per-request cost.

moto 5.2.5's server, on every request:
- lists and stats its own package directory (`werkzeug_app.get_backend_for_host` ->
  `backends.list_of_moto_modules`): the installed package does not change while it runs, so the scan is
  done once;
- writes an access-log line through `logging`, under a lock every request thread contends for: only
  server errors (5xx) are logged unless `--access-log` is given.

Together they take roughly a third of moto's CPU per request, and on a small machine moto's CPU is what bounds
the data plane's parallel copies. Everything else is moto's own server, unchanged.

`--synthetic-source BUCKET:IMAGES:SEED` (`make demo`) starts S3 with a bucket of synthetic photos in the public
bucket's layout already in it, as the public bucket exists before any run: written into moto's store by this
process while it serves (`file_list.json` last, so a reader waits for that), not as 3000 PUTs, which cost 12 s
of CPU on both sides of the connection on a 2-core machine. Byte for byte what `dataset.seed.seed_synthetic`
writes through the S3 API, which a later week's new photos still take.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
import traceback


def _quiet_handler(base: type) -> type:
    class ErrorsOnlyRequestHandler(base):  # type: ignore[misc, valid-type]
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if str(code).startswith("5"):
                super().log_request(code, size)

    return ErrorsOnlyRequestHandler


def parse_source(spec: str) -> tuple[str, int, int]:
    """`BUCKET:IMAGES:SEED` -> (bucket, images, seed)."""
    try:
        bucket, images, seed = spec.split(":")
        return bucket, int(images), int(seed)
    except ValueError as exc:
        raise SystemExit(f"--synthetic-source wants BUCKET:IMAGES:SEED, got {spec!r}") from exc


def seed_store(bucket: str, images: int, seed: int, region: str) -> None:
    """Write the synthetic source into this process's S3 store; `file_list.json` is written last."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from inventory_pipeline.dataset.seed import file_list_body, synthetic_objects
    from inventory_pipeline.dataset.synthetic import file_list, generate

    started = time.monotonic()
    store = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]  # where requests signed with the stack's keys land
    store.create_bucket(bucket, region)
    written = []
    for item in generate(images, seed=seed):
        for key, body, content_type in synthetic_objects(item):
            store.put_object(bucket, key, body).set_metadata({"Content-Type": content_type})
        written.append(item)
        if len(written) % 500 == 0:
            print(f"synthetic source: {len(written)}/{images} photos in s3://{bucket}", flush=True)
    store.put_object(bucket, "file_list.json", file_list_body(file_list(written)))
    print(f"synthetic source: s3://{bucket} ready, {images} photos in {time.monotonic() - started:.1f} s", flush=True)


def _seed_or_exit(bucket: str, images: int, seed: int) -> None:
    try:
        seed_store(bucket, images, seed, region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    except BaseException:  # a half-seeded source must not be served as a whole one: the server goes down
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--access-log", action="store_true", help="log every request (moto's default)")
    parser.add_argument("--synthetic-source", metavar="BUCKET:IMAGES:SEED", help="start with this bucket seeded")
    ours, moto_args = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    import moto.backends
    import moto.server

    if ours.synthetic_source:
        source = parse_source(ours.synthetic_source)  # a malformed value fails before the server starts
        import moto.s3.models  # noqa: F401  (here: two threads importing one package at once can fail)

        threading.Thread(target=_seed_or_exit, args=source, daemon=True).start()

    scan = moto.backends.list_of_moto_modules
    moto.backends.list_of_moto_modules = functools.cache(lambda: tuple(scan()))
    if not ours.access_log:
        moto.server.MotoRequestHandler = _quiet_handler(moto.server.MotoRequestHandler)
    moto.server.main(moto_args)


if __name__ == "__main__":
    main()
