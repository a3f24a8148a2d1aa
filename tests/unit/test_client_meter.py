"""The client's own load over a block: CPU, loop lag and streams in flight (issue 13)."""

from __future__ import annotations

import asyncio
import time

import pytest

from servelab.client.clock import MonotonicClock
from servelab.client.meter import LAG_INTERVAL_S, ClientMeter
from servelab.records import ClientLoad


def test_a_blocked_loop_shows_as_lag_and_busy_work_as_cpu() -> None:
    async def go() -> ClientLoad:
        with ClientMeter(MonotonicClock()) as meter:
            await asyncio.sleep(0.05)
            end = time.process_time() + 0.1
            while time.process_time() < end:  # 100 ms of CPU that blocks the loop
                pass
            await asyncio.sleep(0.05)
        return meter.result(streams_max=3)

    load = asyncio.run(go())
    assert load.streams_max == 3 and load.processes == 1
    assert load.cpu_user_s + load.cpu_sys_s >= 0.09
    assert load.wall_s >= 0.19
    # a tick falls due within one interval of the block's start, and runs at its end
    assert load.loop_lag_max_s is not None and load.loop_lag_max_s >= 0.09 - LAG_INTERVAL_S
    assert load.loop_lag_p99_s is not None and load.loop_lag_p99_s <= load.loop_lag_max_s


def test_outside_a_loop_only_cpu_is_measured_and_workers_add_up() -> None:
    with ClientMeter(MonotonicClock()) as meter:
        meter.add_process(1.5, 0.5)
    load = meter.result(streams_max=0)
    assert load.loop_lag_p99_s is None and load.loop_lag_max_s is None
    assert load.processes == 2 and load.cpu_user_s >= 1.5 and load.cpu_sys_s >= 0.5


def test_client_load_round_trips_through_json() -> None:
    load = ClientLoad(2.0, 0.5, 0.25, 0.001, 0.004, 64, processes=2)
    assert ClientLoad.from_json(load.to_json()) == load
    v1 = {k: v for k, v in load.to_json().items() if k != "processes"}
    assert ClientLoad.from_json(v1).processes == 1
    with pytest.raises(ValueError, match="wall_s"):
        ClientLoad.from_json({**load.to_json(), "wall_s": "x"})
