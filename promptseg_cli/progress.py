"""Progress reporting: rich progress bars on a terminal, plain timestamped log lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

#: Seconds between plain log lines when not on a terminal.
PLAIN_INTERVAL = 10.0


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slower than one a second)."""

    def render(self, task) -> Text:
        speed = task.speed
        if not speed:
            return Text("-/s")
        return Text(f"{speed:.1f}/s" if speed >= 1 else f"{1 / speed:.1f}s/it")


class Reporter:
    """Messages and progress for one command; ``quiet`` keeps only warnings and errors. Tasks may run in several
    threads at once: on a terminal their bars share one live display."""

    def __init__(self, quiet: bool = False, verbose: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.verbose = verbose
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.interactive = self.console.is_terminal and not quiet
        self._progress: Progress | None = None  # the live display while tasks run on a terminal
        self._lock = threading.Lock()

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def debug(self, message: str) -> None:
        if self.verbose:
            self.console.print(message, markup=False, style="dim")

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, style="yellow")

    def error(self, message: str) -> None:
        self.console.print(f"error: {message}", markup=False, style="bold red")

    @contextmanager
    def task(self, description: str, total: int, completed: int = 0) -> Iterator[Callable[[int, str], None]]:
        """Yield ``advance(n, status)`` that moves a bar (terminal) or prints a line every few seconds."""
        if self.interactive:
            with self._bar(description, total, completed) as advance:
                yield advance
            return
        state = {"done": completed, "last": 0.0, "start": time.time(), "base": completed}

        def advance(n: int, status: str = "") -> None:
            state["done"] += n
            now = time.time()
            if self.quiet or (now - state["last"] < PLAIN_INTERVAL and state["done"] < total):
                return
            state["last"] = now
            rate = (state["done"] - state["base"]) / max(now - state["start"], 1e-6)
            eta = (total - state["done"]) / rate if rate > 0 else float("inf")
            eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
            print(f"[{time.strftime('%H:%M:%S')}] {description}: {state['done']}/{total} {status} "
                  f"({rate:.2f}/s, ETA {eta_text})", file=sys.stderr, flush=True)

        yield advance

    @contextmanager
    def _bar(self, description: str, total: int, completed: int) -> Iterator[Callable[[int, str], None]]:
        """A bar in the shared live display, started with the first bar and stopped with the last; a finished
        bar is printed above it, where it stays."""
        with self._lock:
            if self._progress is None:
                columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                           TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"),
                           TimeRemainingColumn())
                self._progress = Progress(*columns, console=self.console, transient=True)
                self._progress.start()
            progress = self._progress
            task = progress.add_task(description, total=total, completed=completed, status="")
        try:
            yield lambda n, status="": progress.update(task, advance=n, status=status)
        finally:
            with self._lock:
                progress.console.print(progress.make_tasks_table([t for t in progress.tasks if t.id == task]))
                progress.remove_task(task)
                if not progress.tasks:
                    progress.stop()
                    self._progress = None
