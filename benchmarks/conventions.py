"""The conventions table: how each backend's flow differs from the canonical model, per
arch preset, generated from what the adapters declare (peers' ``Offer``s), beside the
canonical definition of each aspect."""

from __future__ import annotations

from flowbench import adapters

_SCALE = {"realnvp": "exp(s)", "maf": "exp(s)", "iaf": "exp(s)", "glow": "sigmoid(s + 2)",
          "nice": "none (additive)"}
_SPLINE = ("3K-1 parameters, bin widths/heights >= 1e-3 of the interval, interior slopes "
           "1e-3 + softplus, boundary slopes 1, identity outside +-tail_bound")


def canonical(arch: str) -> dict[str, str]:
    """The canonical model's side of every aspect (adapters/canonical.py)."""
    spec = adapters.FlowSpec(arch=arch)
    out = {"builds": "adapters/canonical.py, matched in torch, jax and tfp",
           "direction": "forward/sample z -> x; inverse/log_prob x -> z",
           "base": "standard normal, fixed",
           "conditioner": "plain MLP with spec.hidden widths, output layer initialised small"}
    if arch in _SCALE:
        out["scale"] = _SCALE[arch]
    if spec.conditioner == "coupling":
        out["masks"] = "identity on the first dim//2 (even layers), the last dim//2 (odd)"
    else:
        out["MADE degrees"] = "cyclic hidden degrees; input order reversed on odd layers"
        out["permutation"] = "none (the MADE order alternates instead)"
    if spec.transform == "spline":
        out["spline"] = _SPLINE
    if spec.transform == "mlp":
        out["transformer"] = (f"deep sigmoidal flow, {spec.naf_hidden} units, inverse by "
                              "bisection to 1e-6 (1 + |u|)")
    if arch == "nice":
        out["extra layers"] = "final diagonal scaling"
    if arch == "glow":
        out["extra layers"] = ("ActNorm (data-dependent init on the first training batch) "
                               "+ LU 1x1 map initialised at a random rotation")
    out["exact inverse"] = "yes"
    return out


def conventions_markdown(backend_names) -> str:
    """One table per arch: aspect x (canonical, each backend that declares something)."""
    import pandas as pd

    rows = []
    for name in backend_names:
        backend = adapters.load(name)
        rows += backend.conventions() if getattr(backend, "kind", "") == "peer" else []
    declared = pd.DataFrame(rows, columns=["backend", "arch", "aspect", "value"])
    parts = ["# Conventions: where each library's flow differs from the canonical model", "",
             "Generated from the adapters' declarations (`flowbench conventions`). A blank "
             "cell: the backend declares no difference for that aspect.", ""]
    for arch in adapters.PRESETS:
        cols = {"canonical": pd.Series(canonical(arch))}
        for name, group in declared[declared.arch == arch].groupby("backend", sort=False):
            cols[name] = group.set_index("aspect")["value"]
        table = pd.DataFrame(cols)
        missing = {n: adapters.load(n).missing[arch] for n in backend_names
                   if arch in getattr(adapters.load(n), "missing", {})}
        parts += [f"## {arch}", "", table.fillna("").to_markdown(), ""]
        if missing:
            parts += ["Not offered: " + "; ".join(f"{n}: {why}" for n, why in missing.items()),
                      ""]
    return "\n".join(parts)
