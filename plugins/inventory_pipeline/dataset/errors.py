"""Errors of the data plane: each says what to fix (bucket, key, counts, threshold)."""

from __future__ import annotations


class DatasetError(Exception):
    """The dataset cannot be built as asked; nothing new was published."""


class SourceNotFound(DatasetError):
    """The source bucket, prefix or file list does not exist or cannot be read."""


class InvalidFileList(DatasetError):
    """The file list is not in the {"1": ["metadata/<id>.json", ...], ...} shape."""


class EmptySelection(DatasetError):
    """Nothing to train on: the selection is empty."""


class EmptySplit(DatasetError):
    """The selection is too small: some split would have no image of some count."""


class TooManyRejects(DatasetError):
    """More images failed validation than the reject threshold allows."""

    def __init__(self, message: str, rejects: list[dict[str, str]]):
        super().__init__(message)
        self.rejects = rejects


class NoCredentials(DatasetError):
    """No AWS credentials were found for the connection."""
