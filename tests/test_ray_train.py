"""Ray Train on a real local Ray head (started here, stopped here): `ray job submit` of the
smoke config, metrics and checkpoint found through Ray's job and train APIs, a killed worker
recovered from its checkpoint, and Ray-parallel inference equal to the single-process CSV."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from sparse_det.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, read_checkpoint

pytestmark = pytest.mark.slow  # a real Ray head and Ray Train jobs

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A head like `make ray-up`'s, on free ports and its own temp dir, so that stopping it
    touches no other Ray on the machine. Yields (dashboard URL, SPARSE_DET_ROOT, temp dir)."""
    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    root = tmp / "root"
    root.mkdir()
    env = dict(os.environ, RAY_AUTH_MODE="token", SPARSE_DET_ROOT=str(root),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True)
    dash = _free_port()
    cmd = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host",
           "127.0.0.1", "--include-dashboard", "true", "--num-cpus", "2",
           "--temp-dir", str(tmp / "ray"), "--port", str(_free_port()),
           "--dashboard-port", str(dash), "--ray-client-server-port", str(_free_port()),
           "--dashboard-agent-listen-port", str(_free_port()),
           "--metrics-export-port", str(_free_port()),
           "--runtime-env-agent-port", str(_free_port())]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # the job client reads ~/.ray/auth_token
    try:
        yield f"http://127.0.0.1:{dash}", root, tmp / "ray"
    finally:
        _stop_head(tmp / "ray")
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), from /proc (Ray workers retitle themselves
    `ray::RayTrainWorker...`, which shows in their cmdline)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out[int(d.name)] = (ppid, cmd)
    return out


def _head_processes(temp_dir: Path, procs: dict[int, tuple[int, str]] | None = None
                    ) -> list[int]:
    """This head's processes: those naming its temp dir, and all their descendants, in
    `procs` (one /proc snapshot; default: a new one)."""
    procs = _processes() if procs is None else procs
    ours = {pid for pid, (_, cmd) in procs.items() if str(temp_dir) in cmd}
    grew = True
    while grew:
        kids = {pid for pid, (ppid, _) in procs.items() if ppid in ours} - ours
        ours |= kids
        grew = bool(kids)
    return sorted(ours)


def _stop_head(temp_dir: Path) -> None:
    """SIGTERM, then SIGKILL, every process of this head; `ray stop` would stop every Ray on
    the machine."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _head_processes(temp_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.time() + 15
        while pids and time.time() < end:
            pids = [p for p in pids if Path(f"/proc/{p}").exists()
                    and "(Z)" not in _state(p)]
            time.sleep(0.3)


def _state(pid: int) -> str:
    try:
        return "(" + Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] + ")"
    except (OSError, IndexError):
        return "(gone)"


def _submit(url: str, args: list[str]):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(url)
    job = client.submit_job(entrypoint="python -m ray_jobs.train " + " ".join(args),
                            runtime_env={"working_dir": str(REPO)})
    return client, job


def _wait(client, job, timeout_s: float = 420) -> str:
    from ray.job_submission import JobStatus

    end = time.time() + timeout_s
    while time.time() < end:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(2)
    client.stop_job(job)
    raise AssertionError(f"job {job} not finished after {timeout_s} s:\n"
                         f"{client.get_job_logs(job)[-3000:]}")


def _train_runs(url: str) -> list[dict]:
    """The dashboard's Ray Train view, through its HTTP API."""
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    req = urllib.request.Request(f"{url}/api/train/v2/runs/v1",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["train_runs"]


def test_smoke_job_submit(ray_head):
    from ray.job_submission import JobStatus
    from ray.train import Result

    url, root, _ = ray_head
    client, job = _submit(url, ["--config", "configs/smoke.yaml", "--steps", "20"])
    status = _wait(client, job)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    # Progress in `ray job logs`: one line per epoch with the validation score.
    assert "epoch 1 step 10:" in logs and "epoch 2 step 20:" in logs, logs[-3000:]
    # The data the job made lands in SPARSE_DET_ROOT, not in Ray's copy of the checkout.
    assert (root / "data/smoke/project/copick_config.json").is_file()
    assert len(list((root / "data/smoke/shards").iterdir())) == 3

    runs = [r for r in _train_runs(url) if r["job_id"] == client.get_job_info(job).job_id]
    assert runs and runs[0]["status"] == "FINISHED", runs
    assert runs[0]["name"] == "ray_train", runs[0]["name"]

    result = Result.from_path(str(root / "runs/smoke/ray_train"))
    m = result.metrics
    assert m["epoch"] == 2 and m["step"] == 20 and m["world_size"] == 2, m
    assert 0.0 <= m["val_score"] <= 1.0 and m["voxels_per_s"] > 0, m
    assert {f"val_f4/{k}" for k in ("ribosome", "apo-ferritin")} <= set(m), sorted(m)
    with result.checkpoint.as_directory() as d:
        doc = read_checkpoint(Path(d) / "checkpoint.pt")
    assert doc["extra"]["step"] == 20
    # The exported checkpoints are what sparse_det.infer loads.
    ck = load_checkpoint(root / "runs/smoke/best.pt")
    assert ck.config.model.channels == (16, 32, 64) and len(ck.particles) == 6, ck.config
    hist = json.loads((root / "runs/smoke/history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2], hist


def test_killed_worker_resumes_from_checkpoint(ray_head):
    from ray.job_submission import JobStatus

    url, root, temp_dir = ray_head
    out = root / "runs/killed"
    client, job = _submit(url, ["--config", "configs/smoke.yaml", "--steps", "50",
                                "--out-dir", str(out)])
    # Wait until Ray Train has registered a checkpoint (its snapshot names one; a folder on
    # disk alone may be a report still in flight), then SIGKILL a training worker.
    snapshot = out / "ray_train" / "checkpoint_manager_snapshot.json"
    end = time.time() + 300
    while not (snapshot.is_file() and "checkpoint_" in snapshot.read_text()):
        assert time.time() < end, client.get_job_logs(job)[-3000:]
        assert client.get_job_status(job) in (JobStatus.PENDING, JobStatus.RUNNING), \
            client.get_job_logs(job)[-3000:]
        time.sleep(0.5)
    procs = _processes()  # one snapshot: a process may start or end between two
    workers = [p for p in _head_processes(temp_dir, procs) if "RayTrainWorker" in procs[p][1]]
    assert len(workers) == 2, [procs[p][1][:80] for p in _head_processes(temp_dir, procs)]
    os.kill(workers[-1], signal.SIGKILL)
    status = _wait(client, job)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "resumed from checkpoint at step" in logs, logs[-3000:]
    hist = json.loads((out / "history.json").read_text())
    # Every epoch exactly once: nothing repeated, nothing skipped.
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5], [h["epoch"] for h in hist]
    assert [h["step"] for h in hist] == [10, 20, 30, 40, 50], hist

    # A finished (or stopped) job resubmitted under the same run name goes on from its
    # latest checkpoint: here 10 more steps.
    client, job = _submit(url, ["--config", "configs/smoke.yaml", "--steps", "60",
                                "--out-dir", str(out)])
    assert _wait(client, job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    assert "resumed from checkpoint at step 50 (epoch 5)" in client.get_job_logs(job)
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6], [h["epoch"] for h in hist]


def test_job_in_rays_copy_without_root_fails_clearly(tmp_path, monkeypatch, capsys):
    from ray_jobs.train import main

    copy = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("SPARSE_DET_ROOT", raising=False)
    assert main(["--config", str(REPO / "configs/smoke.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "temporary copy of the working dir" in err, err
    assert "--root" in err and not (copy / "data").exists()


def test_bad_config_is_one_line(tmp_path, capsys):
    from ray_jobs.train import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("ray: {num_workers: two}\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.ray.num_workers: expected int" in err, err


def test_ray_inference_matches_single_process(small_project, tmp_path):
    from ray_jobs.infer import infer_project_ray
    from sparse_det.stream import infer_project

    local = infer_project(small_project, DEFAULT_CHECKPOINT)
    import ray

    from tests.test_particle_classes import relabelled

    parts = tmp_path / "parts"
    # The tasks name picks as the project does, with the user's class map too.
    named = relabelled(small_project, tmp_path / "named",
                       rename={"ribosome": "cytosolic-ribosome", "thyroglobulin": "big-one"})
    try:
        fanned = infer_project_ray(small_project, DEFAULT_CHECKPOINT, parts_dir=parts)
        fanned_named = infer_project_ray(named, DEFAULT_CHECKPOINT,
                                         class_map={"big-one": "thyroglobulin"})
    finally:
        ray.shutdown()
    assert len(local) > 20, local
    _same_picks(local, fanned)
    _same_picks(local.replace({"particle_type": {"ribosome": "cytosolic-ribosome",
                                                 "thyroglobulin": "big-one"}}), fanned_named)
    # each task kept its run's picks where a resumed call (Ray's or not) reads them
    assert sorted(p.stem for p in parts.glob("*.json")) == sorted(small_project.runs())
    pd.testing.assert_frame_equal(fanned, infer_project(small_project, DEFAULT_CHECKPOINT,
                                                        parts_dir=parts))


def _same_picks(a: pd.DataFrame, b: pd.DataFrame, tol_A: float = 0.05) -> None:
    """The same rows, runs and classes, and positions equal to float rounding: a task holds
    one CPU and its torch one thread, and the BLAS sums a product's terms in an order that
    depends on its threads (MKL's fp32 GEMM on AVX-512 hosts: 9e-5 apart in a product of
    1,728 terms; picks up to 0.013 Å apart), where the hit radius is 30 Å or more."""
    assert len(a) == len(b), (len(a), len(b))
    label = ["experiment", "particle_type"]
    pd.testing.assert_frame_equal(a[label], b[label])
    gap = (a[["x", "y", "z"]] - b[["x", "y", "z"]]).abs().to_numpy().max()
    assert gap <= tol_A, f"picks {gap:.3f} Å apart"
