"""Week 3's new photos: taken while week 2 runs, and arriving in the source bucket as soon as week 2 has pinned
its selection.

A run reads only the pairs its `select_source` pinned (keys and ETags; every later read names the ETag), so
photos that arrive after that belong to the next run, as an uploader's would. The photos are rendered in another
process when week 2 starts (`take`); they go up through the S3 API, from a thread, when week 2's output shows
its `select_source` has ended (`on_line`), while the rest of week 2 runs on the other core; `arrived` waits for
them before week 3 starts (and uploads them then if week 2 never got that far).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from inventory_pipeline.dataset.seed import seed_synthetic
from inventory_pipeline.dataset.synthetic import SyntheticImage, render_all

log = logging.getLogger(__name__)

SELECTION_PINNED = "[DAG TEST] end task task_id=select_source "  # `dags test`'s line once the task is over


class NewPhotos:
    """`count` photos after the first `first_index - 1`, rendered with `seed`, for `bucket` (see module doc)."""

    def __init__(self, s3: Any, bucket: str, count: int, seed: int, first_index: int):
        self.s3, self.bucket, self.count, self.seed, self.first_index = s3, bucket, count, seed, first_index
        self._camera = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self._taken: Future[list[SyntheticImage]] | None = None
        self._lock = threading.Lock()
        self._upload: threading.Thread | None = None
        self._seeded: dict[str, Any] | None = None
        self._error: BaseException | None = None

    @property
    def uploading(self) -> bool:
        """Whether the upload has begun (it begins once)."""
        return self._upload is not None

    def take(self) -> None:
        """Renders the photos in another process, from now on."""
        self._taken = self._camera.submit(render_all, self.count, self.seed, self.first_index)

    def on_line(self, line: str) -> None:
        """A line of the running week's output: once its selection is pinned, the photos go up."""
        if SELECTION_PINNED in line:
            self._start_upload()

    def arrived(self) -> dict[str, Any]:
        """Waits until every photo and the extended file list are in the bucket; what `seed_synthetic` answered."""
        self._start_upload()
        assert self._upload is not None
        self._upload.join()
        if self._error is not None:
            raise self._error
        assert self._seeded is not None
        return self._seeded

    def close(self) -> None:
        if self._upload is not None:
            self._upload.join()
        self._camera.shutdown(cancel_futures=True)

    def _start_upload(self) -> None:
        with self._lock:
            if self._upload is None:
                log.info(
                    "week 3's %d new photos go up to s3://%s now (the running week has pinned its selection: they "
                    "are the next week's)",
                    self.count,
                    self.bucket,
                )
                self._upload = threading.Thread(target=self._upload_now, name="new-photos")
                self._upload.start()

    def _upload_now(self) -> None:
        try:
            rendered = self._taken.result() if self._taken is not None else None
            self._seeded = seed_synthetic(
                self.s3, self.bucket, prefix="", images=self.count, seed=self.seed, add=True, rendered=rendered
            )
        except BaseException as exc:  # re-raised by `arrived`, in the demo's own thread
            self._error = exc
