"""Diagnostics to the host's log, tagged with the session and tool; never replayed.

Outside a component (a tool's unit tests under plain Python) lines go to stderr.
"""

import sys


def _log(level: str, message: str) -> None:
    try:
        from wit_world.imports import log
    except ImportError:
        print(f"{level.lower()}: {message}", file=sys.stderr)
        return
    log.log(getattr(log.Level, level), str(message))


def trace(message: str) -> None:
    _log("TRACE", message)


def debug(message: str) -> None:
    _log("DEBUG", message)


def info(message: str) -> None:
    _log("INFO", message)


def warn(message: str) -> None:
    _log("WARN", message)


def error(message: str) -> None:
    _log("ERROR", message)
