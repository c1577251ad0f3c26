"""Progress of transfers, as a person at a terminal wants it and a log file does not.

On a terminal (stderr is a TTY and ``--quiet`` was not given) each transfer gets a bar with
bytes, rate and time left, drawn on stderr by ``rich`` and removed when it ends; elsewhere
nothing is drawn, and the one line per finished package the commands print is the record.
Results on stdout are never touched: bars go to stderr only.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

from .store.base import Progress

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

#: Transfers smaller than this finish before a bar could be read; they get none.
SHOWN_FROM = 1024 * 1024


def _ignore(_: int) -> None:
    pass


def wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


class Bars:
    """A :data:`~tychoreg.store.base.ProgressFactory` that draws one bar per transfer."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._live: RichProgress | None = None
        self._lock = threading.Lock()

    def __call__(self, label: str, total: int) -> Progress:
        if not self.enabled or total < SHOWN_FROM:
            return _ignore
        with self._lock:
            live = self._start()
            task = live.add_task(label, total=total)
        moved = [0]

        def advance(n: int) -> None:
            with self._lock:  # parts report from several threads; a restart may count past the end
                if moved[0] >= total:
                    return
                step = min(n, total - moved[0])
                moved[0] += step
                live.update(task, advance=step)
                if moved[0] >= total:
                    live.remove_task(task)

        return advance

    def _start(self) -> RichProgress:
        if self._live is None:  # rich is imported only when a bar is drawn
            from rich.console import Console  # noqa: PLC0415 - rich: ~20 ms, only when a bar is drawn
            from rich.progress import (  # noqa: PLC0415 - rich: ~20 ms, only when a bar is drawn
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._live = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
                redirect_stdout=sys.stdout.isatty(),
                redirect_stderr=False,
            )
            self._live.start()
        return self._live

    def close(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None
