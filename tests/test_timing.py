"""fleetcore.timing: nested blocks charge exclusive time; threads accumulate into one table."""

from __future__ import annotations

import threading
import time

from fleetcore.timing import stage_time, take_stage_times


def test_nested_blocks_charge_exclusive_time():
    take_stage_times()
    with stage_time("outer"):
        time.sleep(0.05)
        with stage_time("inner"):
            time.sleep(0.1)
        time.sleep(0.05)
    got = take_stage_times()
    assert got["inner"][1] == 1 and got["outer"][1] == 1
    assert 0.09 <= got["inner"][0] < 0.2
    assert 0.09 <= got["outer"][0] < 0.2, "the inner block's time is not charged to the outer one"
    assert take_stage_times() == {}


def test_threads_accumulate_and_a_failing_block_is_still_charged():
    take_stage_times()

    def work():
        with stage_time("decode"):
            time.sleep(0.05)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        with stage_time("encode"):
            raise ValueError("boom")
    except ValueError:
        pass
    got = take_stage_times()
    assert got["decode"][1] == 3 and got["decode"][0] >= 0.14
    assert got["encode"][1] == 1
