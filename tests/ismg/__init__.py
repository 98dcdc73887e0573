"""A CMPP 2.0 / 3.0 ISMG simulator for the tests and benchmarks (see `tests.ismg.server`)."""

from .events import Event, EventLog, IsmgError
from .server import DEFAULT_SECRET, DEFAULT_SP_ID, Ismg, IsmgControl, IsmgOptions, running_ismg

__all__ = [
    "DEFAULT_SECRET",
    "DEFAULT_SP_ID",
    "Event",
    "EventLog",
    "Ismg",
    "IsmgControl",
    "IsmgError",
    "IsmgOptions",
    "running_ismg",
]
