"""Connecting to Ray: an existing cluster when given one, else a private local one.

What binds where (Ray 2.60, measured with `ss -ltnp`): the dashboard and job API listen on
127.0.0.1 as asked. Ray's core gRPC servers (GCS, raylet, workers) listen on every interface
whatever --node-ip-address says — Ray maps 127.0.0.1 to the node's address on purpose
(ray._private.services.resolve_ip_for_localhost) — so they are guarded by token
authentication instead: on by default for a local ray.init(), and `make ray-up` starts the
head with RAY_AUTH_MODE=token.
"""

from __future__ import annotations

import os


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True,
             dashboard: bool = False):
    """`address` None and no RAY_ADDRESS (as `ray job submit` sets): start a private local
    Ray, with a dashboard on 127.0.0.1 only when asked (Ray Train's state API needs it).
    Otherwise connect ("auto", "ray://...", "HOST:6379")."""
    import ray

    if ray.is_initialized():
        return ray
    kw = {"log_to_driver": not quiet, "configure_logging": True,
          "logging_level": "WARNING" if quiet else "INFO"}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                 **kw)
    return ray


def largest_node_memory() -> int:
    """The `memory` resource of the cluster's largest live node (bytes; 0 if none says)."""
    import ray

    return int(max((node["Resources"].get("memory", 0) for node in ray.nodes()
                    if node.get("Alive")), default=0))


def task_memory(estimate_bytes: int | None, largest_bytes: int | None = None) -> dict:
    """Ray options that reserve a task's estimated peak memory (`memory`: Ray then starts no
    more tasks on a node than its memory holds, where CPUs alone would start one per core),
    capped at the largest node's (`largest_bytes`, asked of the cluster when None) so that no
    task is unschedulable; {} without an estimate."""
    if not estimate_bytes:
        return {}
    largest = largest_node_memory() if largest_bytes is None else largest_bytes
    return {"memory": int(min(estimate_bytes, largest))} if largest > 0 else {}
