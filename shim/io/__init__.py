"""Process stdio for the shim: pipes, FIFOs, files, binary loggers and consoles (docs/architecture.md).

The task service uses only what is exported here: `StdioConfig` and `ProcessIO` (one per process), the
`Spawner` protocol it implements for binary loggers, and the errors it maps to client-visible messages.
"""
from shim.io.config import StdioConfig
from shim.io.console import ConsoleSocketError
from shim.io.errors import LoggerStartError, StdioOpenError, UnsupportedStdioError
from shim.io.logger import ChildProcess, Spawner
from shim.io.process_io import ProcessIO

__all__ = [
    "ChildProcess",
    "ConsoleSocketError",
    "LoggerStartError",
    "ProcessIO",
    "Spawner",
    "StdioConfig",
    "StdioOpenError",
    "UnsupportedStdioError",
]
