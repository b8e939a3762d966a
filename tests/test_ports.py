"""Ports for services started later are chosen where no outgoing connection can take them first.

A port from ``bind(0)`` lies in the kernel's ephemeral range, and between our choice and the
service's own bind any outgoing connection may be given it as its local port (CI lost a
gateway to exactly that while an agent collector kept retrying it)."""

from __future__ import annotations

import socket

from paid_telemetry_ops.services import _ephemeral_range, free_port, free_port_run, free_ports_n
from paid_telemetry_ops.stack import free_ports


def test_ports_are_outside_the_ephemeral_range_distinct_and_bindable() -> None:
    low, high = _ephemeral_range()
    ports = free_ports_n(300) + [free_port() for _ in range(50)] + list(free_ports(("a", "b", "c")).values())
    assert len(set(ports)) == len(ports) == 353
    assert all(not low <= p <= high for p in ports), [p for p in ports if low <= p <= high]
    assert all(p >= 10000 for p in ports)  # never a well-known port (5432, 9090, the 9464-9479 fallback range)
    for p in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_outgoing_connections_do_not_land_on_a_chosen_port() -> None:
    """Hundreds of outgoing connections (each gets an ephemeral local port) never use one of ours."""
    chosen = set(free_ports_n(50))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(512)
        clients = [socket.create_connection(server.getsockname()) for _ in range(400)]
        try:
            local = {c.getsockname()[1] for c in clients}
        finally:
            for c in clients:
                c.close()
    assert len(local) == 400
    assert not local & chosen


def test_port_runs_are_consecutive_free_outside_the_range_and_never_reused() -> None:
    low, high = _ephemeral_range()
    bases = [free_port_run(16) for _ in range(20)]
    ports = [b + i for b in bases for i in range(16)]
    assert len(set(ports)) == 320
    assert all(not low <= p <= high and p >= 10000 and p <= 65535 for p in ports)
    assert not set(ports) & set(free_ports_n(200))
    for p in ports[:16]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
