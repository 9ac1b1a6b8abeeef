"""bench/read_peak.py: real zarr levels read as `infer` reads them, each in a fresh process
with the model loaded; each row says how the level reached the working grid, how many
voxels it made, and a read line that the measured peak stays under."""

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "read_peak", Path(__file__).resolve().parents[1] / "bench" / "read_peak.py")
read_peak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(read_peak)


def test_levels_are_read_in_a_fresh_process_under_their_line(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert read_peak.main(["--work", str(tmp_path / "work"), "--json", str(out),
                           "--case", "60,200,200:7.84:32,64,64",
                           "--case", "40,150,150:20:64,128,128"]) == 0
    rows = json.loads(out.read_text())
    assert [r["how"] for r in rows] == ["bin 2, resample", "as is"]
    # 60 sections at 7.84 Å bin to 30 at 15.68, resampled to 23 at 20 Å; 200 -> 78
    assert [r["working_voxels"] for r in rows] == [23 * 78 * 78, 40 * 150 * 150]
    for r in rows:
        assert 0.05 < r["before_gb"] <= r["peak_gb"] < r["read_line_gb"] <= r["estimate_gb"]
    assert "| 60×200×200 | 7.84 | 32 | bin 2, resample | " in capsys.readouterr().out
    assert all(r["seconds"] > 0 for r in rows)


def test_a_malformed_case_is_refused():
    with pytest.raises(SystemExit):
        read_peak.main(["--case", "60,200:7.84:32,64,64"])
