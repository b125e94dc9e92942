"""moto's server (S3 + CloudWatch Logs of the embedded stack), started with two fixes to its per-request cost.

moto 5.2.5's server, on every request:
- lists and stats its own package directory (`werkzeug_app.get_backend_for_host` ->
  `backends.list_of_moto_modules`): the installed package does not change while it runs, so the scan is
  done once;
- writes an access-log line through `logging`, under a lock every request thread contends for: only
  server errors (5xx) are logged unless `--access-log` is given.

Together they take roughly a third of moto's CPU per request, and on a small machine moto's CPU is what bounds
the data plane's parallel copies. Everything else is moto's own server, unchanged.
"""

from __future__ import annotations

import argparse
import functools
import sys


def _quiet_handler(base: type) -> type:
    class ErrorsOnlyRequestHandler(base):  # type: ignore[misc, valid-type]
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if str(code).startswith("5"):
                super().log_request(code, size)

    return ErrorsOnlyRequestHandler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--access-log", action="store_true", help="log every request (moto's default)")
    ours, moto_args = parser.parse_known_args(argv if argv is not None else sys.argv[1:])

    import moto.backends
    import moto.server

    scan = moto.backends.list_of_moto_modules
    moto.backends.list_of_moto_modules = functools.cache(lambda: tuple(scan()))
    if not ours.access_log:
        moto.server.MotoRequestHandler = _quiet_handler(moto.server.MotoRequestHandler)
    moto.server.main(moto_args)


if __name__ == "__main__":
    main()
