"""Errors of the data plane: each says what to fix (bucket, key, counts, threshold)."""

from __future__ import annotations


class DatasetError(Exception):
    """The dataset cannot be built as asked; nothing new was published.

    `permanent`: another attempt would meet the same error (bad input, a missing bucket, a refused selection),
    so the DAG's task fails at once instead of retrying; S3 errors that may pass (5xx, throttling) are not.
    """

    permanent = False


class SourceNotFound(DatasetError):
    """The source bucket, prefix or file list does not exist or cannot be read."""

    permanent = True


class InvalidFileList(DatasetError):
    """The file list is not in the {"1": ["metadata/<id>.json", ...], ...} shape."""

    permanent = True


class EmptySelection(DatasetError):
    """Nothing to train on: the selection is empty."""

    permanent = True


class EmptySplit(DatasetError):
    """The selection is too small: some split would have no image of some count."""

    permanent = True


class TooManyRejects(DatasetError):
    """More images failed validation than the reject threshold allows."""

    permanent = True

    def __init__(self, message: str, rejects: list[dict[str, str]]):
        super().__init__(message)
        self.rejects = rejects


class NoCredentials(DatasetError):
    """No AWS credentials were found for the connection."""

    permanent = True


class SourceChanged(DatasetError):
    """An object changed after it was selected: this run's selection can no longer be copied as pinned."""

    permanent = True
