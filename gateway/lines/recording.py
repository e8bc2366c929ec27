"""Recordings of what a simulated line carried, one per call.

Not part of the line interface: a real line records nothing, and the call
layer only tells a line's recorder, when it has one, that a call began and
ended. What goes into a recording is the business of whoever assembled the
line (:func:`gateway.lines.build_line`): the simulated line writes its audio
as it plays, a simulated chip or modem renders what it sent at the end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class CallRecorder(ABC):
    """``<directory>/<CallId>.wav`` (and whatever else a recorder keeps) per call."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, call_id: str) -> Path:
        """Where the call's audio is (or will be once the call has ended)."""
        return self.directory / f"{call_id}.wav"

    @abstractmethod
    def begin(self, call_id: str) -> None:
        """A call starts on the line. Raises LineFault when it cannot be recorded."""

    @abstractmethod
    def end(self, call_id: str) -> None:
        """The call ended: finish its files. Never raises for a call not begun."""
