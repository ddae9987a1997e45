"""What an exception raised by an attempt means for the job, as a pure function.

:func:`classify` maps the exception to the :class:`~conveyor.models.JobError` stored on the job
(code, message, retryable). The message is what a user sees through the API: one short line,
without server paths or a library's multi-line dump. The worker logs the full traceback.

Two outcomes are not failures and stay explicit in the worker: ``LeaseLost`` (a newer attempt
owns the job: record nothing) and a processor's ``ProcessorError("cancelled", ...)`` (the job
ends cancelled).
"""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy.exc import SQLAlchemyError

from conveyor.errors import MAX_MESSAGE, InsufficientStorage, ProcessorError, short_message
from conveyor.models import ErrorCode, JobError
from conveyor.processors.registry import BadOptions, UnknownPipeline
from conveyor.storage.base import StorageError


def _os_message(exc: OSError) -> str:
    # strerror and the errno name, never the filename (a server path).
    name = errno.errorcode.get(exc.errno or 0)
    reason = exc.strerror or short_message(str(exc)) or type(exc).__name__
    return f"{reason} ({name})" if name else reason


def classify(exc: BaseException, *, memory_cap_mb: int = 0) -> JobError:
    """The job error for an exception that ended an attempt (pure).

    - ``ProcessorError``: its own code and ``retryable`` (a bad artifact name is one, not
      retryable: a programming error does not go away on retry);
    - ``BadOptions`` / ``UnknownPipeline``: ``bad_options`` / ``unknown_pipeline``, final;
    - ``MemoryError``: ``memory_exceeded``, final (``memory_cap_mb`` goes into the message);
    - ``InsufficientStorage`` (a full disk under the files or the database):
      ``storage_error``, retried;
    - a database error: ``database_error``, retried;
    - ``OSError`` (disk full, ...) or a ``StorageError`` (S3 unreachable, an input whose
      download does not match its sha256): ``storage_error``, retried;
    - anything else: ``processor_error``, retried (a crash may be transient).
    """
    if isinstance(exc, ProcessorError):
        return JobError(exc.code, short_message(exc.message) or exc.code, exc.retryable)
    if isinstance(exc, BadOptions):
        return JobError(ErrorCode.BAD_OPTIONS, short_message(str(exc)), False)
    if isinstance(exc, UnknownPipeline):
        return JobError(ErrorCode.UNKNOWN_PIPELINE, short_message(str(exc)), False)
    if isinstance(exc, MemoryError):
        cap = f" (cap {memory_cap_mb} MiB)" if memory_cap_mb else ""
        return JobError(ErrorCode.MEMORY_EXCEEDED, f"the job ran out of memory{cap}", False)
    if isinstance(exc, InsufficientStorage):
        return JobError(ErrorCode.STORAGE_ERROR, short_message(str(exc)), True)
    if isinstance(exc, SQLAlchemyError | sqlite3.Error):
        # Driver messages carry SQL and parameters: only the class name goes out.
        return JobError(ErrorCode.DATABASE_ERROR,
                        f"database error ({type(exc).__name__})", True)
    if isinstance(exc, OSError):
        return JobError(ErrorCode.STORAGE_ERROR, short_message(_os_message(exc)), True)
    if isinstance(exc, StorageError):
        return JobError(ErrorCode.STORAGE_ERROR,
                        short_message(str(exc)) or type(exc).__name__, True)
    detail = short_message(str(exc))
    name = type(exc).__name__
    return JobError(ErrorCode.PROCESSOR_ERROR, f"{name}: {detail}" if detail else name, True)

__all__ = ["MAX_MESSAGE", "classify", "short_message"]
