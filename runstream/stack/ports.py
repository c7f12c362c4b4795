"""Free TCP ports on 127.0.0.1."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection


def is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, *, with_grpc_twin: bool = False, avoid: Collection[int] = ()) -> list[int]:
    """`n` distinct free ports below the kernel's ephemeral range (so outgoing connections
    never take them between runs); with_grpc_twin also requires port+10000 free (SeaweedFS
    serves gRPC there). `avoid`: ports promised to a process that has not bound them yet
    (free now, taken soon); neither a port nor its twin is one of them."""
    low, high = 20000, _ephemeral_low() - 1
    if with_grpc_twin:
        high = min(high, 65535) - 10000
    rng = random.SystemRandom()
    chosen: list[int] = []
    for _ in range(10000):
        if len(chosen) == n:
            return chosen
        port = rng.randint(low, high)
        if port in chosen or (port + 10000) in chosen or port in avoid:
            continue
        if (with_grpc_twin and port + 10000 in avoid) or not is_free(port):
            continue
        if with_grpc_twin and not is_free(port + 10000):
            continue
        chosen.append(port)
    raise OSError(f"could not find {n} free ports on 127.0.0.1 in {low}-{high}")


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def wait_port(port: int, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False
