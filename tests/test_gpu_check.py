"""``flowbench gpu-check`` on a machine without CUDA (every CI run): a clear message and
exit code 3, nothing written; its CPU-against-GPU comparison, run here with the "GPU" flow
built on the CPU, finds agreement, and finds a planted difference."""

from __future__ import annotations

import pytest

from flowbench.benchmarks import cli, gpu_check

from .conftest import load_or_skip


def test_without_cuda_it_says_so_and_exits_3(tmp_path, capsys):
    torch_backend = load_or_skip("torch")
    if any(d.startswith("cuda") for d in torch_backend.devices()):
        pytest.skip("this machine has a GPU: the check would run for real")
    assert cli.main(["gpu-check", "--backends", "torch", "--out", str(tmp_path)]) == 3
    out = capsys.readouterr().out
    assert "needs a CUDA GPU" in out and "torch sees 0 CUDA device(s)" in out
    assert not list(tmp_path.iterdir())


def _cpu_as_gpu(monkeypatch, backend, plant: float = 0.0):
    """Build "cuda" flows on the CPU; with ``plant``, their weights are off by it."""
    build = type(backend).build

    def fake(self, spec, seed=0, device="cpu", **kw):
        flow = build(self, spec, seed=seed, device="cpu", **kw)
        if device == "cuda" and plant:
            set_weights = flow.set_weights

            def shifted(w):
                set_weights({k: v + plant if v.dtype.kind == "f" else v
                             for k, v in w.items()})
            flow.set_weights = shifted
        return flow
    monkeypatch.setattr(type(backend), "build", fake)


def test_parity_of_identical_devices_is_ok(monkeypatch):
    backend = load_or_skip("torch")
    _cpu_as_gpu(monkeypatch, backend)
    rows = gpu_check.parity_rows("torch", ["maf", "realnvp"])
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(r[k] == 0.0 for r in rows for k in ("log_prob", "z", "x", "after_step"))


def test_parity_finds_a_planted_difference(monkeypatch):
    backend = load_or_skip("torch")
    _cpu_as_gpu(monkeypatch, backend, plant=1e-2)
    (row,) = gpu_check.parity_rows("torch", ["maf"])
    assert row["status"] == "MISMATCH" and row["log_prob"] > 1e-3
