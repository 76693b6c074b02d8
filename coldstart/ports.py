"""Free TCP ports for the servers this project starts on one machine (Ray's dashboard, HAProxy, HTTP apps,
PostgreSQL in tests).

A port is often picked minutes before it is bound (a cluster's HAProxy ports when the cluster starts, the app's
when Serve starts). Picked from the kernel's ephemeral range (32768+), another process's outgoing connection
may be handed it in between: a Serve start failed on that once ("Address already in use"). So ports come from
`QUIET_PORTS`: below the ephemeral range, above Ray's worker ports (10002-19999) and under Serve's replica
ports (30000+), where no process is handed one unasked.
"""

from __future__ import annotations

import random
import socket

QUIET_PORTS = range(20000, 30000)


def free_port(taken: set[int] | None = None, *, host: str = "0.0.0.0", ports: range = QUIET_PORTS) -> int:
    """A port of `ports` that `host` can bind now and that is not in `taken` (to which it is added, so that
    several picks before any bind differ). OSError if 200 tries find none."""
    taken = set() if taken is None else taken
    for port in random.sample(ports, min(200, len(ports))):
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise OSError(f"no free port in {ports.start}-{ports.stop - 1} on {host}")
