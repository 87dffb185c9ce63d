"""The far tails (|x| in 50, 1e3, 1e4, on both diagonals): for finite input every
backend's ``log_prob`` is a float or -inf where its float arithmetic overflowed, never NaN
or +inf, the same rows -inf in every backend and in the float64 reference (which keeps the
same rule), and the finite values agree with the reference. Untrained (initial) weights and
trained-looking ones (canonical random weights at scale 0.1), every preset."""

from __future__ import annotations

import numpy as np
import pytest

from flowbench import adapters
from flowbench.adapters import canonical as C
from flowbench.adapters.reference import Reference

from .conftest import PRESETS

FAR = np.array([(s * a, t * a) for a in (50.0, 1e3, 1e4) for s, t in
                ((1, 1), (-1, -1), (1, -1), (-1, 1))], np.float32)


@pytest.mark.parametrize("arch", PRESETS)
def test_log_prob_far_in_the_tails_is_finite_or_minus_inf_as_the_reference(backend, arch):
    spec = adapters.FlowSpec(arch=arch, dim=2)
    flow = backend.build(spec, seed=0)
    for weights in (spec.init_weights(0), C.random_weights(spec, 0, 0.1)):
        flow.set_weights(weights)
        lp = flow.log_prob(FAR).astype(np.float64)
        with np.errstate(all="ignore"):
            ref = Reference(spec, weights).log_prob(FAR.astype(np.float64))
        assert not np.isnan(lp).any() and not (lp == np.inf).any(), lp
        assert not np.isnan(ref).any()
        # float32 overflows where float64 still holds a (hugely negative) value
        huge = np.abs(ref) > 1e30
        same = ~huge
        np.testing.assert_array_equal(np.isneginf(lp[same]), np.isneginf(ref[same]),
                                      err_msg=f"{arch}: -inf rows differ from the reference")
        both = same & np.isfinite(ref)
        np.testing.assert_allclose(lp[both], ref[both], rtol=1e-3, atol=1e-3)
        assert (np.isneginf(lp[huge]) | (lp[huge] < -1e30)).all()


def test_an_overflowing_flow_is_counted_in_its_cell_and_the_report(tmp_path):
    """Test rows where log q = -inf: the cell says how many, its NLL is inf (not a mean
    of the rest), and the report names the cell."""
    import types

    import pandas as pd

    from flowbench.benchmarks import report, training, worker

    lp = np.array([-1.0, -2.0, -np.inf, -1.5])
    std = types.SimpleNamespace(log_density=lambda flow, backend, x: lp)
    ds = types.SimpleNamespace(test=np.zeros((4, 2)), dim=2, entropy=lambda: (1.0, 0.0))
    cell = types.SimpleNamespace(artifacts="", quality=True)
    base = dict(cell="c", backend="torch", arch="maf", kind="train", dataset="eq39",
                seed=0, run_id="r", matrix="quick")
    rows = worker.Rows(str(tmp_path / "rows.jsonl"), base)
    training.evaluate(None, None, ds, cell, rows, std)
    rows.status("ok", "")
    df = pd.read_json(tmp_path / "rows.jsonl", lines=True)
    got = dict(zip(df.metric, df.value))
    assert got["overflowed_log_prob"] == 1 and got["test_nll"] == np.inf
    assert "entropy_gap" not in got  # nothing computed over the finite rows only
    df.to_csv(tmp_path / "quick.csv", index=False)
    text = report.build(tmp_path).read_text()
    assert "Overflow (log q = -inf on test rows" in text and "1 of 4 rows" in text
