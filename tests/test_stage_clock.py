import threading
import time

import pytest

from promptseg_cli.pipeline.stage_clock import StageClock


def _burn(seconds: float) -> None:
    """Keep this thread's CPU busy for ``seconds`` of its own CPU time."""
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        sum(range(1000))


def test_stages_get_the_cpu_time_of_the_threads_that_ran_them():
    clock = StageClock()

    def work():
        with clock.stage("a"):
            _burn(0.2)
        time.sleep(0.2)  # waiting is not CPU time
        with clock.stage("b"):
            _burn(0.1)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = clock.seconds()
    assert seconds["a"] == pytest.approx(0.4, abs=0.05) and seconds["b"] == pytest.approx(0.2, abs=0.05)
    assert seconds["total"] >= seconds["a"] + seconds["b"] - 0.02 and seconds["other"] >= 0
