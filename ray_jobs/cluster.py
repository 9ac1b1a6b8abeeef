"""Connecting to Ray: an existing cluster when given one, else a private local one on 127.0.0.1."""

from __future__ import annotations

import os


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
    """`address` None and no RAY_ADDRESS (as `ray job submit` sets): start a local Ray bound to
    127.0.0.1 without a dashboard. Otherwise connect ("auto", "ray://...", "127.0.0.1:6379")."""
    import ray

    if ray.is_initialized():
        return ray
    kw = {"log_to_driver": not quiet, "configure_logging": True,
          "logging_level": "WARNING" if quiet else "INFO"}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **kw)
    return ray
