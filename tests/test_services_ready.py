"""Readiness of the Temporal dev server means "the frontend serves", not "the port is open":
right after ``start()`` the first real calls succeed without any retry."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from temporalio.client import Client

from paid_telemetry_ops.services import free_port, temporal_healthy, temporal_server

pytestmark = pytest.mark.e2e


def test_a_dead_address_is_not_healthy_and_says_so_fast() -> None:
    started = time.monotonic()
    assert temporal_healthy(f"127.0.0.1:{free_port()}") is False
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("trial", range(3))
def test_first_calls_after_start_succeed_without_retry(tmp_path: Path, trial: int) -> None:
    srv = temporal_server(tmp_path / "temporal").start(timeout=90)
    try:
        address = f"127.0.0.1:{srv.ports['grpc']}"

        async def first_calls() -> int:
            client = await Client.connect(address)  # no retry loop: ready means ready
            count = await client.count_workflows()
            return count.count

        assert asyncio.run(first_calls()) == 0
        assert temporal_healthy(address)
    finally:
        srv.stop()
    assert not srv.running()


def test_a_service_that_exits_while_starting_is_started_again(tmp_path: Path) -> None:
    """The first launch dies (as a dev server does that lost an internal port); the retry serves."""
    from paid_telemetry_ops.services import Service

    marker = tmp_path / "first-launch-done"
    script = f'if [ -e "{marker}" ]; then echo up > "{tmp_path}/up"; exec sleep 30; else touch "{marker}"; exit 3; fi'
    svc = Service("flaky", ["sh", "-c", script], tmp_path, ready=lambda: (tmp_path / "up").exists(), retries=1)
    try:
        svc.start(timeout=10)
        assert svc.running() and marker.exists()
    finally:
        svc.stop()
    once = Service("dies", ["sh", "-c", "exit 3"], tmp_path / "once", ready=lambda: False)
    with pytest.raises(RuntimeError, match="dies exited with 3"):
        once.start(timeout=10)
