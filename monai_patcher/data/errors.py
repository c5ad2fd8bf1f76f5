"""The exception raised for bad input data (files, volumes, datalists), and finding it under wrappers."""

from __future__ import annotations

import os

__all__ = ["DataError", "error_chain", "clear_error"]


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


def error_chain(e: BaseException) -> list[BaseException]:
    """``e`` and the exceptions it was raised from (``__cause__``, else an unsuppressed ``__context__``), outermost
    first: MONAI wraps errors (``Compose``: "applying transform ...", a bundle config: "Failed to evaluate ...")."""
    seen: list[BaseException] = []
    while e is not None and not any(e is s for s in seen):
        seen.append(e)
        e = e.__cause__ or (e.__context__ if not e.__suppress_context__ else None)
    return seen


def clear_error(e: BaseException, types: tuple[type[BaseException], ...] = (ValueError, OSError)) -> BaseException | None:
    """The innermost exception of ``types`` in ``e``'s chain (:func:`error_chain`): the clear message (a
    ``DataError``, a ``CheckpointError``, a ``FileNotFoundError`` naming the file) under MONAI's wrappers; None if
    there is none (an unexpected error).

    Example:
        >>> try:
        ...     try:
        ...         raise DataError("/data/adc.nii.gz: contains NaN voxels")
        ...     except DataError as inner:
        ...         raise RuntimeError("applying transform ...") from inner
        ... except RuntimeError as outer:
        ...     print(clear_error(outer))
        /data/adc.nii.gz: contains NaN voxels
    """
    for err in reversed(error_chain(e)):
        if isinstance(err, types):
            return err
    return None
