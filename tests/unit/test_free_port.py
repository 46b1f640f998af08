"""`juki up` gives each child a port to listen on before the child binds it: the port must not be one the
kernel may hand out meanwhile as the source port of an outgoing connection, nor one given twice."""

from __future__ import annotations

import socket
from pathlib import Path

from jukitools.suite import free_port


def test_ports_given_to_children_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
    for port in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", port))
            listener.listen()
