"""conveyor: background file processing as a service.

Upload a file, get ``202 Accepted`` and a job id in milliseconds; supervised worker processes run
the job's pipeline; follow it live, get a signed webhook, download the results.
"""

from conveyor.client import AsyncClient, Client
from conveyor.errors import ClientError, ConveyorError, ProcessorError
from conveyor.processors import Context, processor
from conveyor.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "Context",
    "ConveyorError",
    "ProcessorError",
    "Settings",
    "__version__",
    "processor",
]
