"""conveyor's exceptions.

::

    ConveyorError
    ├── ProcessorError          a processor refuses or fails a job (carries a stable ``code``)
    ├── JobNotFound             an id that never existed
    ├── JobGone                 an id that expired or was deleted
    ├── JobConflict             the job is in a state that forbids the request
    ├── LeaseLost               a worker's lease token no longer matches (a newer attempt owns it)
    └── ClientError             the Python client got a problem+json answer
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every conveyor exception."""


class ProcessorError(ConveyorError):
    """Raised by a processor to fail the job with a stable ``code``.

    ``retryable=False`` (the default) ends the job at once: a corrupt file stays corrupt.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class JobNotFound(ConveyorError):
    pass


class JobGone(ConveyorError):
    pass


class JobConflict(ConveyorError):
    pass


class LeaseLost(ConveyorError):
    """A fenced write found another lease token: this attempt no longer owns the job."""


class ClientError(ConveyorError):
    """A problem+json answer received by :mod:`conveyor.client`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
