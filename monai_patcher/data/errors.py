"""The exception raised for bad input data (files, volumes, datalists)."""

from __future__ import annotations

import os

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data: the message names the file (when there is one) and the problem.

    A subclass of ``ValueError`` so ``except ValueError`` keeps working. It takes a single message
    argument (so it survives being re-raised from ``DataLoader`` worker processes); use
    :meth:`for_file` to build the ``"<file>: <problem>"`` message.

    Example:
        >>> raise DataError.for_file("/data/case1/adc.nii.gz", "contains 12 NaN voxels")
        Traceback (most recent call last):
        ...
        monai_patcher.data.errors.DataError: /data/case1/adc.nii.gz: contains 12 NaN voxels
    """

    @classmethod
    def for_file(cls, path, problem: str) -> "DataError":
        """Build an error whose message is ``"<path>: <problem>"`` (just ``problem`` if ``path`` is empty).

        Args:
            path: the offending file or folder (str, ``os.PathLike`` or None).
            problem: what is wrong with it, in plain words.
        """
        if path is None or path == "":
            return cls(problem)
        return cls(f"{os.fspath(path) if isinstance(path, os.PathLike) else path}: {problem}")
