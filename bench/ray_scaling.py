"""Ray Train scaling on this machine: the same global batch on 1 worker × C CPUs and on
N workers × C/N CPUs, on a private local Ray; time per epoch, throughput and the Ray head's
memory (GCS, raylet, dashboard and agents, summed RSS).

    python bench/ray_scaling.py [--config configs/default.yaml] [--steps 60]
                                [--steps-per-epoch 30] [--json bench/ray_scaling.json]

The last epoch's time is reported (the first carries process-group and allocator warm-up);
epoch time includes validation on the config's validation runs, split between the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray_jobs.config import load_train_config
from ray_jobs.train import train_distributed

HEAD_PROCESSES = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py",
                  "runtime_env", "DashboardA", "RuntimeEnv")


def head_rss_mb() -> float:
    """Summed RSS of this machine's Ray system processes (not the train workers)."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            if not any(k in cmd for k in HEAD_PROCESSES):
                continue
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--steps-per-epoch", type=int, default=30)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ray_scaling") as tmp:
        for workers in (1, 2):
            cfg, ray_cfg = load_train_config(a.config)
            cfg.train.steps, cfg.train.steps_per_epoch = a.steps, a.steps_per_epoch
            cfg.train.out_dir = str(Path(tmp) / f"w{workers}")
            ray_cfg.num_workers, ray_cfg.cpus_per_worker = workers, max(1, a.cpus // workers)
            s = train_distributed(cfg, ray_cfg, fresh=True)
            hist = json.loads((Path(cfg.train.out_dir) / "history.json").read_text())
            rows.append({"workers": workers, "cpus_per_worker": ray_cfg.cpus_per_worker,
                         "global_batch": cfg.train.batch_size,
                         "epoch_s": hist[-1]["epoch_s"],
                         "voxels_per_s": hist[-1]["voxels_per_s"],
                         "startup_and_total_s": s["train_s"], "head_rss_mb": head_rss_mb()})
    base = rows[0]["epoch_s"]
    print("\n| workers × CPUs | global batch | s/epoch | speed-up | voxels/s | job s | "
          "head RSS MB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} × {r['cpus_per_worker']} | {r['global_batch']} | "
              f"{r['epoch_s']:.1f} | {base / r['epoch_s']:.2f}× | {r['voxels_per_s']:.0f} | "
              f"{r['startup_and_total_s']:.0f} | {r['head_rss_mb']:.0f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"config": a.config, "steps": a.steps,
                                            "steps_per_epoch": a.steps_per_epoch,
                                            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
