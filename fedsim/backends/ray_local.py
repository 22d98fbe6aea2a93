"""A Ray of this machine alone, whose processes listen on the loopback interface only.

Ray has no authentication by default: whoever reaches a Ray port can join the cluster and
run code in it.  Ray's servers (GCS, raylet, workers, agents, metrics) listen on 127.0.0.1
only when the node's IP is 127.0.0.1, and ``ray.init`` turns ``_node_ip_address=
"127.0.0.1"`` into the machine's external IP unless Ray runs in its single-machine mode
(the one it uses on macOS and Windows), chosen by ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``.
Ray reads that variable once, when it is imported, into ``ray_constants``.
"""

from __future__ import annotations

import logging
import os

from fedsim.errors import RunError

SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


def init_local_ray(num_cpus: int | None, log_to_driver: bool = False) -> None:
    """Start a Ray on this machine that listens on 127.0.0.1 only (no dashboard, quiet).

    Parameters
    ----------
    num_cpus:
        CPUs that Ray hands out (None: all of this machine's).
    log_to_driver:
        Whether the workers' output is printed by this process.
    """
    import ray
    from ray._private import ray_constants

    saved = os.environ.get(SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE] = "0"  # for Ray's processes, started now with this environment
    ray_constants.ENABLE_RAY_CLUSTER = False  # for this process, which has imported Ray already
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            logging_level=logging.ERROR,
            log_to_driver=log_to_driver,
        )
    finally:  # a later ray.init(address=...) in this process may join a real cluster
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
        if saved[0] is None:
            del os.environ[SINGLE_MACHINE]
        else:
            os.environ[SINGLE_MACHINE] = saved[0]
    address = ray.util.get_node_ip_address()
    if address != LOOPBACK:  # a Ray whose switch has moved or changed its meaning
        ray.shutdown()
        raise RunError(
            f"Ray {ray.__version__} started on {address}, not "
            f"{LOOPBACK}: refusing to run a cluster that other machines can join; "
            "start Ray yourself and join it (backend.address, hydra.launcher.address)"
        )
