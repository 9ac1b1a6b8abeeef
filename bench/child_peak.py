"""A module's command line run in a child process of its own, with its wall seconds and its
peak memory: the kernel's high-water mark of the child's own memory (VmHWM). ru_maxrss
would carry over the parent's at fork through exec, high after a bench has written a large
tomogram."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs the module as `python -m` would, then reports VmHWM on stderr, whatever the exit.
PROBE = """import re, runpy, sys
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
finally:
    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())
    print('peak_kB', hwm.group(1), file=sys.stderr)
"""


def run_measured(module: str, args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak GB) of `python -m module args` in a child run from the project
    root; its stderr is shown and the bench stops where it fails."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, module, *args], cwd=ROOT,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"python -m {module} failed (exit {done.returncode})")
    return seconds, int(done.stderr.split("peak_kB")[-1]) / 2**20
