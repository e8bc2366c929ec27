"""The recent commands of the API and the web console, for the console's log page.

Bounded and in memory: it answers "did my keys go out?", it is not an audit
trail (the one line per command in the service log is that). No parameter is
kept, so nothing a client sent - a password, a URL with credentials in it, the
keys of a gate code - can show up here.

What signed-in users did and the requests nobody signed in for (no or wrong
credentials, a locked or refused address) are kept apart: a flood of the
second kind, which anyone on the LAN can send, folds into a few counted rows
of its own and never pushes the first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from datetime import datetime

#: Commands that change nothing. An integrator polling one of them every second
#: would push every action out of the log, so repeats fold into one row.
READ_ONLY = frozenset({"ListActiveCalls"})
SIZE = 200
#: Rows of refused requests, one per address, command and code, each counted.
REFUSED_SIZE = 50
#: Longer text is cut: a client's unknown command or CallId can be 64 kB long.
FIELD_CHARS = 64


@dataclass(frozen=True)
class CommandRecord:
    at: datetime
    via: str  # "api" or "console"
    user: str
    address: str
    command: str
    line: str
    call: str
    code: int
    #: How many identical read-only commands in a row this row stands for.
    count: int = 1

    def same_as(self, other: CommandRecord) -> bool:
        return (self.via, self.user, self.address, self.command, self.line, self.call,
                self.code) == (other.via, other.user, other.address, other.command,
                               other.line, other.call, other.code)


def _cut(record: CommandRecord) -> CommandRecord:
    if max(len(record.user), len(record.address), len(record.command), len(record.line),
           len(record.call)) <= FIELD_CHARS:
        return record  # the usual case: no copy
    return replace(record, user=record.user[:FIELD_CHARS], address=record.address[:FIELD_CHARS],
                   command=record.command[:FIELD_CHARS], line=record.line[:FIELD_CHARS],
                   call=record.call[:FIELD_CHARS])


class CommandLog:
    def __init__(self, size: int = SIZE, refused_size: int = REFUSED_SIZE) -> None:
        self._records: deque[CommandRecord] = deque(maxlen=size)
        # (via, address, command, code) -> its latest row, least recent first.
        self._refused: OrderedDict[tuple[str, str, str, int], CommandRecord] = OrderedDict()
        self._refused_size = refused_size
        self._lock = threading.Lock()

    def add(self, record: CommandRecord) -> None:
        """What a signed-in user did."""
        record = _cut(record)
        with self._lock:
            last = self._records[-1] if self._records else None
            if last is not None and record.command in READ_ONLY and record.same_as(last):
                self._records[-1] = replace(record, count=last.count + 1)
            else:
                self._records.append(record)

    def add_refused(self, record: CommandRecord) -> None:
        """A request nobody signed in for: counted in its row."""
        record = _cut(record)
        key = (record.via, record.address, record.command, record.code)
        with self._lock:
            last = self._refused.pop(key, None)
            if last is not None:
                record = replace(record, count=last.count + 1)
            self._refused[key] = record
            while len(self._refused) > self._refused_size:
                self._refused.popitem(last=False)

    def recent(self, limit: int | None = None) -> list[CommandRecord]:
        """Both kinds, newest first."""
        with self._lock:
            records = [*self._records, *self._refused.values()]
        records.sort(key=lambda r: r.at)
        records.reverse()
        return records if limit is None else records[:limit]
