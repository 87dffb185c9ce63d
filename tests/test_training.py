"""Matched training and quality rows of a train cell (in-process, tiny torch flows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowbench.benchmarks import matrix, worker

TORCH = {"torch": {"variants": ["eager"], "reason": None, "missing": {}}}


def _cell(tmp_path, **over):
    m = matrix.load("quick", {"backends": ["torch"], "archs": ["maf"], "steps": 60,
                              **over})
    cell = matrix.expand(m, TORCH)[0]
    return cell.replace(artifacts=str(tmp_path / "artifacts"), n_train=2000, n_val=500,
                        n_test=1000, batches=[64], min_time=0.01, layers=2, hidden=[16, 16])


def _run(cell, tmp_path) -> pd.DataFrame:
    out = tmp_path / "rows.jsonl"
    worker.run_cell(cell, str(out))
    return pd.read_json(out, lines=True)


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    # lr 0: the validation NLL never improves after the first evaluation
    cell = _cell(tmp_path, lr=0.0, eval_every=10, patience=2, steps=200, quality=False)
    rows = _run(cell, tmp_path).set_index("metric")
    assert rows.loc["status", "status"] == "ok"
    assert rows.loc["steps_run", "value"] == 30
    assert rows.loc["best_val_nll", "step"] == 10
    assert rows.loc["restored_best", "value"] == 1.0
    curve = _run(cell, tmp_path)
    assert (curve[curve.metric == "curve_val_nll"].step.tolist()[:3] == [10, 20, 30])
    # no pictures without quality: the per-row test log-densities in a file of their own
    assert not (tmp_path / "artifacts" / f"{cell.key}.npz").exists()
    lp = np.load(tmp_path / "artifacts" / f"{cell.key}.log_density.npz")["test_log_density"]
    assert lp.shape == (1000,)
    assert -lp.mean() == pytest.approx(curve.set_index("metric").loc["test_nll", "value"],
                                       abs=1e-9)


def test_quality_rows_and_pictures(tmp_path):
    """Quality rows checked against numbers computed here another way: test NLL from the
    saved density grid interpolated at the test points, the mean KS statistic from scipy
    on the saved latent, and the relations between rows."""
    from flowbench import datasets
    from scipy import stats
    from scipy.interpolate import RegularGridInterpolator

    cell = _cell(tmp_path, eval_every=20, null_draws=5, metric_n=500)
    rows = _run(cell, tmp_path)
    assert rows[rows.metric == "status"].status.tolist() == ["ok"]
    by = rows.set_index("metric")
    pic = np.load(tmp_path / "artifacts" / f"{cell.key}.npz")
    ds = datasets.load(cell.dataset, n_train=2000, n_val=500, n_test=1000, seed=0)
    grid = RegularGridInterpolator((pic["y"], pic["x"]), pic["learned"], bounds_error=False,
                                   fill_value=None)
    nll, se = by.loc["test_nll", ["value", "stderr"]]
    # the per-row test log-densities the report pairs backends on: the test_nll row's rows
    lp = pic["test_log_density"]
    assert lp.dtype == np.float64 and lp.shape == (1000,)
    assert -lp.mean() == pytest.approx(nll, abs=1e-9)
    assert np.std(lp, ddof=1) / np.sqrt(1000) == pytest.approx(se, rel=1e-9)
    assert nll == pytest.approx(-grid(ds.test[:, ::-1]).mean(), abs=0.01)
    assert se == pytest.approx(np.std(grid(ds.test[:, ::-1]), ddof=1) / np.sqrt(1000),
                               rel=0.05)
    assert by.loc["test_nll_per_dim", "value"] == pytest.approx(nll / 2, rel=1e-12)
    assert by.loc["target_entropy", "value"] == pytest.approx(3.531024, abs=1e-5)
    assert by.loc["entropy_gap", "value"] == pytest.approx(nll - 3.531024, abs=1e-5)
    # 60 Adam steps from near-identity: well above the entropy, well below the start
    assert 0.05 < by.loc["entropy_gap", "value"] < 1.0
    assert by.loc["best_val_nll", "value"] == pytest.approx(nll, abs=4 * se)

    z = pic["z"].astype(np.float64)
    assert z.shape == (1000, 2)
    ks = np.mean([stats.kstest(z[:, i], "norm").statistic for i in range(2)])
    assert by.loc["normality_ks_mean", "value"] == pytest.approx(ks, rel=1e-5)
    # the null: KS of 1000 true normal draws; its 95th percentile near 1.36 / sqrt(n)
    assert 0.02 < by.loc["normality_ks_mean", "null_q95"] < 1.36 / np.sqrt(1000) + 0.01
    assert 0.7 < by.loc["normality_henze_zirkler", "null_q95"] < 1.4  # HZ ~ 1 under H0
    assert by.loc["normality_henze_zirkler", "n_used"] == 500
    for metric in ("sliced_wasserstein", "ks_mean", "corr_frobenius", "mmd_rbf"):
        value, ref = by.loc[f"two_sample_{metric}", ["value", "reference"]]
        assert np.isfinite(value) and np.isfinite(ref) and abs(ref) < 0.5, metric
        assert "n_X=500, n_Y=500, n_ref=500" in by.loc[f"two_sample_{metric}", "detail"]
    assert by.loc["invertibility_max_abs", "value"] < 1e-4
    assert rows[rows.metric == "curve_val_nll"].step.tolist() == [20, 40, 60]
    dx, dy = pic["x"][1] - pic["x"][0], pic["y"][1] - pic["y"][0]
    # the grid covers the test data's 0.5-99.5 percentile box, padded: nearly all mass
    assert 0.9 < np.exp(pic["learned"]).sum() * dx * dy < 1.01
    assert 0.9 < np.exp(pic["true"]).sum() * dx * dy < 1.01


def test_image_cell_bits_per_dim_quality_and_sample_grid(tmp_path):
    """Glow on the embedded digits, a few steps: bits/dim with the logit Jacobian, the
    latent's normality, two-sample rows against the validation split, a sample grid."""
    m = matrix.load("images", {"backends": ["torch"], "archs": ["glow"], "seeds": [0],
                               "steps": 20})
    cell = matrix.expand(m, TORCH)[0]
    cell = cell.replace(artifacts=str(tmp_path / "artifacts"), batches=[32], min_time=0.01,
                        image_steps=1, image_hidden=8, eval_every=10, null_draws=3,
                        metric_n=200)
    rows = _run(cell, tmp_path)
    assert rows[rows.metric == "status"].status.tolist() == ["ok"], rows.error.tolist()
    by = rows.set_index("metric")
    bpd, nll = by.loc["test_bpd", "value"], by.loc["test_nll", "value"]
    assert 0 < bpd < np.log2(17) + 3  # an untrained flow on 17-level pixels: a few bits
    np.testing.assert_allclose(nll, bpd * 64 * np.log(2), rtol=1e-9)
    assert rows.dim.dropna().iloc[0] == 64
    for metric in ("normality_henze_zirkler", "two_sample_mmd_rbf",
                   "invertibility_max_abs"):
        assert np.isfinite(by.loc[metric, "value"]), metric
    assert "validation" in by.loc["two_sample_ks_mean", "detail"]
    curve = rows[rows.metric == "curve_val_nll"]
    assert curve.step.tolist() == [10, 20] and np.isfinite(curve.value).all()
    pic = np.load(tmp_path / "artifacts" / f"{cell.key}.npz")
    assert pic["samples"].shape == (64, 8, 8, 1) and pic["samples"].dtype == np.uint8
    assert pic["samples"].max() <= 16 and int(pic["levels"]) == 17
    lp = pic["test_log_density"]  # per row, in test_nll's units
    assert lp.dtype == np.float64 and lp.ndim == 1 and len(lp) > 100
    np.testing.assert_allclose(-lp.mean(), nll, rtol=1e-9)
    np.testing.assert_allclose(np.std(lp, ddof=1) / np.sqrt(len(lp)),
                               by.loc["test_nll", "stderr"], rtol=1e-9)
    timed = rows[(rows.metric == "time") & (rows.statistic == "median")]
    assert set(timed.op) == {"log_prob", "sample", "train_step"}
    assert np.isfinite(rows[rows.metric == "gflops"].value).all()
    # the report: a bits/dim table and the digit sample grid
    from flowbench.benchmarks import report, results
    results.append(tmp_path / "images.csv", rows.assign(run_id="r", matrix="images")
                   .to_dict("records"))
    text = report.build(tmp_path).read_text()
    assert "test bits/dim" in text and "samples_digits.png" in text
    assert (tmp_path / "samples_digits.png").stat().st_size > 1000
