"""bench/gpu.py --smoke: the GPU benchmark's own code, run on the tiny model on the CPU as a
subprocess (Django-free, as on the GPU host), within its budget, so it cannot rot. The figures
are not asserted (a shared CPU says little); that each row is written, named as documented and
plausible is."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"matmul", "setup", "generation", "textual_inversion", "lora", "classifier"}

pytestmark = pytest.mark.slow


def run_bench(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},  # no Django settings
    )


def test_the_smoke_run_writes_every_section_within_its_budget(tmp_path):
    out = tmp_path / "out"
    # The budget bounds the measuring; imports, and a training step or generation call
    # already under way when it ends, come on top.
    done = run_bench("--smoke", "--out", str(out), "--budget-s", "120", timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    rows = report["rows"]
    assert {row["section"] for row in rows} == SECTIONS
    assert report["meta"]["model"] == "tiny" and "torch" in report["meta"]
    assert rows[0]["section"] == "matmul" and rows[0]["tflops"] > 0
    measured = [r for r in rows if "skipped" not in r]
    generation = [r for r in measured if r["section"] == "generation"]
    # The first generation row always fits: the budget only skips what comes after.
    assert generation and generation[0]["variant"] == "eager" and generation[0]["batch"] == 1
    for row in generation:
        assert row["images_per_s"] >= row["images_per_s_with_scoring_and_png"] > 0
        assert 0 < row["generate_share_of_wall"] <= 1
        assert row["flops_per_image"] > 1e8 and 0 < row["share_of_matmul_rate"] < 1
        assert (row["optimizations"] is not None) == (row["variant"] == "optimized")
    for row in measured:
        if row["section"] in ("textual_inversion", "lora"):
            assert row["s_per_step"] > 0 and row["peak_mem_bytes"] is None  # CUDA only
        if row["section"] == "classifier":
            assert row["images_per_s"] > 0
    for row in rows:
        assert row.get("variant") in ("eager", "optimized", "float32", "-")
    table = (out / "gpu.md").read_text()
    assert table.count("\n| generation | eager |") == sum(
        r["section"] == "generation" and r["variant"] == "eager" for r in rows
    )
    assert "| section | variant | batch | images_per_s | s_per_step | peak_mem_bytes |" in table


def test_missing_packages_name_the_install_command(tmp_path):
    """Without diffusers & co. on the path (a bare GPU host), --wheels prints the exact pip
    command instead of installing anything; a missing folder is refused."""
    wheels = tmp_path / "wheels-gpu"
    wheels.mkdir()
    probe = (
        "import sys, importlib.util as u; sys.path.insert(0, 'bench');"
        "real = u.find_spec; u.find_spec = lambda n, *a: None if n == 'lpips' else real(n, *a);"
        f"import gpu; gpu.use_wheels(__import__('pathlib').Path({str(wheels)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "missing: lpips" in done.stderr
    assert (
        f"-m pip install --no-index --no-deps --require-hashes --find-links {wheels} "
        f"-r {wheels}/requirements.txt --target {wheels}/site" in done.stderr
    )
    assert not (wheels / "site").exists()
    refused = run_bench("--out", str(tmp_path), "--wheels", str(tmp_path / "none"), timeout=60)
    assert refused.returncode == 2 and "no such folder (run make gpu-wheels)" in refused.stderr
