"""Progress on a terminal: bars of tasks running at once in several threads (a batch's inputs in progress)."""

import io
import re
import threading

from rich.console import Console

from promptseg_cli.progress import Reporter


def test_bars_of_tasks_in_several_threads_share_one_display_and_each_stays_when_done():
    """rich allows one live display at a time: each task's own would fail in the second thread. Every finished
    bar stays on the screen, as a task's bar does when tasks run one after another."""
    screen = io.StringIO()
    reporter = Reporter(console=Console(file=screen, force_terminal=True, width=150))
    both_running = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def segment(name: str, tiles: int) -> None:
        try:
            with reporter.task(f"segmenting {name}", total=tiles) as advance:
                both_running.wait()
                for done in range(tiles):
                    advance(1, f"{10 * (done + 1)} objects")
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=segment, args=(name, tiles)) for name, tiles in (("a.svs", 3), ("b.svs", 5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with reporter.task("segmenting c.svs", total=2) as advance:  # a later task gets a display again
        advance(2, "20 objects")
    assert not errors
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    for line in ("segmenting a.svs .* 3/3 .* 30 objects", "segmenting b.svs .* 5/5 .* 50 objects",
                 "segmenting c.svs .* 2/2 .* 20 objects"):
        assert re.search(line, text), text
