"""The sparse detector against a dense 3-D U-Net baseline, on the same held-out simulated runs.

    python bench/run.py [--quick] [--budget-s S] [--json bench/results.json]

Trains the dense baseline (bench/dense_unet.py) on the sparse checkpoint's training runs for
the wall-clock time the sparse checkpoint took to train (its history; or --budget-s), tunes its
thresholds on the same validation runs, then scores both on held-out projects at several SNR
levels (simulated on first use under data/bench_*). Each (method, project) is measured in a
fresh process: inference seconds per full-size tomogram (zarr → picks; a project's first run
is not timed, it pays for warm-up) and peak RSS. Also the sparse recall ceiling (the share of
particles the sparsifier keeps).
Prints markdown; writes JSON with keys sparse, dense (score, per_class,
infer_s_per_tomogram, peak_mem_gb, train_s on the main held-out set, plus by_project),
ceiling and gpu. `--quick` does it all on tiny simulated projects in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SCORED = ["apo-ferritin", "beta-galactosidase", "ribosome", "thyroglobulin",
          "virus-like-particle"]
# Held-out SNR levels; everything else drawn from the simulator's default (training) ranges.
SNR_LEVELS = {"snr0.25": (0.22, 0.28), "snr0.5": (0.45, 0.55), "snr1.0": (0.9, 1.1),
              "snr2.0": (1.8, 2.2)}


def _peak_gb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: a spawned child's ru_maxrss starts at
    its parent's high-water mark (Linux carries it across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _eval_sparse(project_path: str, checkpoint: str, threads: int, device: str) -> dict:
    import pandas as pd
    import torch

    from data_tools.copick_io import CopickProject
    from sparse_det.stream import infer_project

    torch.set_num_threads(threads)
    project = CopickProject(project_path)
    rows, times = [], []
    for run in project.runs():
        t0 = time.perf_counter()
        rows.append(infer_project(project, checkpoint, runs=[run], device=device))
        times.append(time.perf_counter() - t0)
    return {"rows": pd.concat(rows).to_dict("list"), "times": _after_warmup(times),
            "peak_gb": _peak_gb()}


def _after_warmup(times: list[float]) -> list[float]:
    """The first run also pays for imports and allocator warm-up: timed only when alone."""
    return times[1:] or times


def _eval_dense(project_path: str, weights: str, thresholds: dict, threads: int,
                device: str) -> dict:
    import torch
    from dense_unet import DenseUNet, detect_dense

    from data_tools.copick_io import CopickProject
    from sparse_det.structures import Detections, detections_table

    torch.set_num_threads(threads)
    dev = torch.device(device)
    project = CopickProject(project_path)
    model = DenseUNet(len(project.particles)).to(dev)
    model.load_state_dict(torch.load(weights, map_location=dev, weights_only=True))
    picked, times = [], []
    for run in project.runs():
        t0 = time.perf_counter()
        _, peaks = detect_dense(model, project, run, dev)
        picked.append(Detections(run, peaks).threshold(thresholds, default=float("inf")))
        times.append(time.perf_counter() - t0)
    df = detections_table(picked)
    return {"rows": df.to_dict("list"), "times": _after_warmup(times), "peak_gb": _peak_gb()}


def in_fresh_process(fn, *args) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def score(project_path: str, res: dict) -> dict:
    import pandas as pd

    from data_tools.copick_io import CopickProject
    from sparse_det.metric import score_tables
    from sparse_det.writers import project_solution, to_submission

    project = CopickProject(project_path)
    rows = pd.DataFrame(res["rows"])
    if not len(rows):
        rows = pd.DataFrame(columns=["experiment", "particle_type", "x", "y", "z"])
    s = score_tables(project_solution(project), to_submission(rows), project.particles)
    return {"score": s.score, "per_class": {k: s.per_class[k].fbeta for k in SCORED},
            "recall": {k: s.per_class[k].recall for k in SCORED},
            "infer_s_per_tomogram": sum(res["times"]) / len(res["times"]),
            "peak_mem_gb": res["peak_gb"], "runs": len(project.runs())}


def make_heldout(out_dir: Path, quick: bool) -> dict[str, str]:
    from data_tools.sim_ranges import SimRanges
    from data_tools.simulate import ensure_project

    shape = (64, 192, 192) if quick else (184, 630, 630)
    n = 1 if quick else 2
    made = {}
    for i, (name, snr) in enumerate(SNR_LEVELS.items()):
        path = out_dir / f"bench_{name}"
        extra = {"crowding": (2.5, 3.0)} if quick else {}
        ensure_project(path, n, 800 + i, shape, SimRanges(snr=snr, **extra), progress=False)
        made[name] = str(path)
    return made


def train_dense_model(cfg, budget_s: float, out: Path, threads: int, device: str,
                      patch_zyx, weights: str | None = None,
                      extra_tune: list[str] | None = None) -> tuple[Path, dict, dict]:
    """Trains the dense model (or loads `weights`, with the training record saved beside
    them) and tunes its thresholds on the config's validation runs plus every run of the
    `extra_tune` projects — the runs the sparse checkpoint's thresholds were tuned on."""
    import torch
    from dense_unet import DenseUNet, detect_dense, load_dense_run, train_dense

    from data_tools.copick_io import CopickProject
    from sparse_det.data import split_runs
    from sparse_det.structures import Detections
    from sparse_det.thresholds import tune_thresholds

    torch.set_num_threads(threads)
    dev = torch.device(device)
    project = CopickProject(cfg.data.project)
    train_runs, val_runs = split_runs(cfg, project)
    model = DenseUNet(len(project.particles)).to(dev)
    if weights:
        model.load_state_dict(torch.load(weights, map_location=dev, weights_only=True))
        info = json.loads(Path(weights).with_suffix(".json").read_text())
    else:
        runs = [load_dense_run(project, r) for r in train_runs]
        info = train_dense(model, runs, budget_s, dev, patch_zyx=patch_zyx)
        del runs
        weights = out / "dense_unet.pt"
        torch.save(model.state_dict(), weights)
        Path(weights).with_suffix(".json").write_text(json.dumps(info))
    tune = [(project, r) for r in val_runs]
    for extra in extra_tune or []:
        p = CopickProject(extra)
        tune += [(p, r) for r in p.runs()]
    dets, truths = [], []
    for p, r in tune:
        v, peaks = detect_dense(model, p, r, dev)
        dets.append(Detections(r, peaks))
        truths.append(v.truth_xyz_A)
    tuning = tune_thresholds(dets, truths, project.particles, default=0.5)
    thresholds, tune_score = tuning.thresholds, tuning.score
    return Path(weights), thresholds, info | {"tune_score": tune_score,
                                              "tune_runs": [r for _, r in tune]}


def gpu_figures(gpu_dir: Path) -> dict | str:
    """bench/gpu.sh's JSON (copied from a CUDA machine into gpu_dir), else 'missing'."""
    try:
        sparse = json.loads((gpu_dir / "gpu.json").read_text())[0]
        dense = json.loads((gpu_dir / "dense_gpu.json").read_text())
        sparse_cpu = json.loads((gpu_dir / "cpu.json").read_text())[0]
        dense_cpu = json.loads((gpu_dir / "dense_cpu.json").read_text())
    except (OSError, ValueError, KeyError, IndexError):
        return "missing (run bench/gpu.sh on a CUDA machine, copy its JSON to --gpu-dir)"
    return {"device": dense["device"],
            "sparse_s_per_tomogram": sparse["infer_s_per_tomogram"],
            "dense_s_per_tomogram": dense["s_per_tomogram"],
            "dense_network_s": dense.get("network_s"),
            "sparse_cpu_s_per_tomogram": sparse_cpu["infer_s_per_tomogram"],
            "dense_cpu_s_per_tomogram": dense_cpu["s_per_tomogram"],
            "cpu": dense_cpu["device"], "dense_gpu_peak_gb": dense.get("gpu_peak_gb")}


def gpu_line(gpu) -> str:
    if isinstance(gpu, str):
        return f"GPU: {gpu}."
    return (f"GPU ({gpu['device']}, bench/gpu.sh, one full-size tomogram end to end): sparse "
            f"{gpu['sparse_s_per_tomogram']:.2f} s, dense {gpu['dense_s_per_tomogram']:.2f} s "
            f"(network {gpu['dense_network_s']:.2f} s); on that machine's CPUs "
            f"({gpu['cpu']}) sparse {gpu['sparse_cpu_s_per_tomogram']:.2f} s, dense "
            f"{gpu['dense_cpu_s_per_tomogram']:.2f} s.")


def markdown(results: dict, levels: list[str]) -> str:
    short = {"apo-ferritin": "apo", "beta-galactosidase": "b-gal", "ribosome": "ribo",
             "thyroglobulin": "thyro", "virus-like-particle": "VLP"}
    lines = ["| held-out | method | " + " | ".join(short[k] for k in SCORED) +
             " | weighted F4 | s/tomogram | peak GB |",
             "|---|---|" + "---|" * (len(SCORED) + 3)]
    for level in levels:
        for method in ("sparse", "dense"):
            r = results[method]["by_project"][level]
            lines.append(f"| {level} | {method} | " +
                         " | ".join(f"{r['per_class'][k]:.3f}" for k in SCORED) +
                         f" | **{r['score']:.3f}** | {r['infer_s_per_tomogram']:.1f} | "
                         f"{r['peak_mem_gb']:.2f} |")
        c = results["ceiling"][level]
        lines.append(f"| {level} | sparse ceiling (kept) | " +
                     " | ".join(f"{c[k]:.3f}" for k in SCORED) + " | | | |")
    lines.append("")
    lines.append(f"Training: sparse {results['sparse']['train_s']:.0f} s, dense "
                 f"{results['dense']['train_s']:.0f} s ({results['dense']['train_steps']} "
                 f"steps) on the same runs. {gpu_line(results['gpu'])}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny projects, short budgets")
    ap.add_argument("--checkpoint", help="sparse checkpoint (default: the shipped one; with "
                                         "--quick, one trained here)")
    ap.add_argument("--budget-s", type=float, help="dense training seconds (default: the "
                                                   "sparse checkpoint's training time)")
    ap.add_argument("--work", default=str(ROOT / "data"), help="held-out projects go here")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dense-weights", help="reuse a trained dense model (its .json beside "
                                            "it holds the training record)")
    ap.add_argument("--extra-tune", action="append", default=[],
                    help="project whose runs also tune the dense thresholds (use the ones the "
                         "sparse checkpoint was tuned on, e.g. data/calib)")
    ap.add_argument("--gpu-dir", default=str(ROOT / "bench" / "gpu_h200"),
                    help="JSON from bench/gpu.sh on a CUDA machine")
    ap.add_argument("--json")
    return ap


def _sparse_checkpoint(a: argparse.Namespace, out: Path, work: Path) -> str:
    """The shipped (or given) checkpoint; with --quick one trained here for 20 steps."""
    from sparse_det.checkpoint import DEFAULT_CHECKPOINT

    if not a.quick:
        return a.checkpoint or str(DEFAULT_CHECKPOINT)
    from data_tools.sim_ranges import SimRanges
    from data_tools.simulate import ensure_project
    from sparse_det.config import load_config
    from sparse_det.training import train

    ensure_project(work / "train", 3, 77, (64, 192, 192),
                   SimRanges(snr=(1.0, 2.0), crowding=(2.5, 3.0)), progress=False)
    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    cfg.data.project, cfg.data.shards = str(work / "train"), str(work / "train_shards")
    cfg.train.out_dir, cfg.train.steps = str(out / "sparse_quick"), 20
    return str(train(cfg, progress=False, resume=False))


def _evaluate_levels(results: dict, levels: dict, checkpoint: str, weights: Path,
                     thresholds: dict, cfg, a: argparse.Namespace) -> None:
    """Both detectors and the sparse recall ceiling on every held-out project."""
    from data_tools.copick_io import CopickProject
    from data_tools.sparsify_ceiling import ceiling_report

    for level, path in levels.items():
        rs = in_fresh_process(_eval_sparse, path, checkpoint, a.threads, a.device)
        rd = in_fresh_process(_eval_dense, path, str(weights), thresholds, a.threads, a.device)
        results["sparse"]["by_project"][level] = score(path, rs)
        results["dense"]["by_project"][level] = score(path, rd)
        rep = ceiling_report(CopickProject(path), cfg.sparsify, None, progress=False)
        results["ceiling"][level] = {k: rep["retained"][k]["fraction"] for k in SCORED}
        print(f"{level}: sparse {results['sparse']['by_project'][level]['score']:.3f}, "
              f"dense {results['dense']['by_project'][level]['score']:.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    from sparse_det.checkpoint import read_checkpoint
    from sparse_det.config import config_from_dict

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) / ("bench_quick" if a.quick else "")
    t_all = time.perf_counter()
    checkpoint = _sparse_checkpoint(a, out, work)
    doc = read_checkpoint(checkpoint)
    cfg = config_from_dict(doc["config"])
    sparse_train_s = sum(h["epoch_s"] for h in doc["extra"].get("history", []))
    if not sparse_train_s and not a.quick:
        if not a.budget_s:
            ap.error(f"{checkpoint} records no training history: pass --budget-s (the shipped "
                     "checkpoint took 1635 s to its best epoch, runs/default/history.json)")
        sparse_train_s = a.budget_s
    budget = a.budget_s or (30.0 if a.quick else sparse_train_s)
    print(f"sparse checkpoint {checkpoint}: trained {sparse_train_s:.0f} s on "
          f"{cfg.data.project}; dense budget {budget:.0f} s", flush=True)
    levels = make_heldout(work, a.quick)
    patch = (32, 64, 64) if a.quick else (32, 96, 96)
    weights, thresholds, dense_info = train_dense_model(cfg, budget, out, a.threads,
                                                        a.device, patch, a.dense_weights,
                                                        a.extra_tune)
    print(f"dense: {dense_info}", flush=True)
    results = {"sparse": {"by_project": {}, "train_s": sparse_train_s, "checkpoint": checkpoint},
               "dense": {"by_project": {}, "train_s": dense_info["train_s"],
                         "train_steps": dense_info["steps"],
                         "tune_score": dense_info["tune_score"],
                         "tune_runs": dense_info["tune_runs"], "thresholds": thresholds},
               "ceiling": {}, "gpu": gpu_figures(Path(a.gpu_dir))}
    _evaluate_levels(results, levels, checkpoint, weights, thresholds, cfg, a)
    main_level = "snr1.0"
    for method in ("sparse", "dense"):
        results[method] |= {k: results[method]["by_project"][main_level][k]
                            for k in ("score", "per_class", "infer_s_per_tomogram",
                                      "peak_mem_gb")}
    results["main_heldout"] = main_level
    results["bench_s"] = time.perf_counter() - t_all
    print(markdown(results, list(levels)))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    from bench.cli import run

    raise SystemExit(run(main))
