"""The report's figures (matplotlib/seaborn, drawn headless): training curves, learned
densities and latents, image sample grids, and time against dim or batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .frame import _ok


def _quality_figures(g, out_dir: Path, ds: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    lines = []
    curve = _ok(g, "curve_val_nll")
    if len(curve):
        fig = out_dir / f"curves_{ds}.png"
        grid = sns.relplot(data=curve.assign(backend=curve["column"]), x="step", y="value",
                           hue="backend", col="arch", kind="line", height=2.8,
                           col_wrap=min(4, curve["arch"].nunique()),
                           facet_kws={"sharey": False})
        grid.set_axis_labels("Adam step", "validation NLL (nats)")
        grid.savefig(fig, dpi=100, bbox_inches="tight")
        plt.close(grid.figure)
        lines += [f"![training curves, {ds}]({fig.name})", ""]
    art = out_dir / "artifacts"
    cells = (g[["cell", "arch", "column", "seed"]].drop_duplicates()
             .sort_values(["arch", "column", "seed"]))
    cells = cells.drop_duplicates(["arch", "column"])
    found = [(r.arch, r.column, art / f"{r.cell}.npz") for r in cells.itertuples()
             if (art / f"{r.cell}.npz").exists()]
    if not found:
        return lines
    archs = sorted({a for a, _, _ in found})
    cols = sorted({c for _, c, _ in found})
    where = {(a, c): p for a, c, p in found}
    if "samples" in np.load(found[0][2]).files:
        return lines + _sample_grids(archs, cols, where, out_dir, ds)
    for what, name in (("density", f"densities_{ds}.png"), ("latent", f"latents_{ds}.png")):
        fig, panels = _panels(archs, cols, "truth", where, 2.1)
        for ax, c, path in panels:
            d = np.load(path)
            if what == "density":
                img = d["true"] if c == "truth" else d["learned"]
                ax.imshow(np.exp(img), origin="lower", aspect="auto", cmap="viridis",
                          extent=(d["x"][0], d["x"][-1], d["y"][0], d["y"][-1]))
            elif c == "truth":
                z = np.random.default_rng(0).standard_normal((1000, 2))
                ax.scatter(z[:, 0], z[:, 1], s=1, alpha=0.4, color="grey")
                ax.set_xlim(-4, 4)
                ax.set_ylim(-4, 4)
            else:
                ax.scatter(d["z"][:, 0], d["z"][:, 1], s=1, alpha=0.4)
                ax.set_xlim(-4, 4)
                ax.set_ylim(-4, 4)
        title = ("learned densities (arch x backend)" if what == "density" else
                 "test data mapped to the latent (arch x backend); truth: N(0, I) draws")
        fig.suptitle(f"{ds}: {title}", fontsize=9)
        fig.savefig(out_dir / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        lines += [f"![{what}, {ds}]({name})", ""]
    return lines


def _panels(archs, cols, first: str, where: dict, size: float):
    """A figure of arch rows x (``first``, *backend) columns; returns it and
    (axis, column, artifact path) for every panel that has an artifact (the ``first``
    column shows the first artifact found: the truth or the data is the same in all)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(archs), len(cols) + 1, squeeze=False,
                             figsize=(size * (len(cols) + 1), size * len(archs)))
    panels = []
    for i, a in enumerate(archs):
        for j, c in enumerate([first] + cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(c, fontsize=8)
            if j == 0:
                ax.set_ylabel(a, fontsize=8)
            path = where.get((a, c)) or (next(iter(where.values())) if c == first else None)
            if path is None:
                ax.axis("off")
            else:
                panels.append((ax, c, path))
    return fig, panels


def _sample_grids(archs, cols, where, out_dir: Path, ds: str) -> list[str]:
    """Image datasets: an 8x8 grid of flow samples per arch x backend beside test images."""
    import matplotlib.pyplot as plt

    def tile(images, levels):
        n = int(np.sqrt(len(images)))
        h, w, c = images.shape[1:]
        grid = images[:n * n].reshape(n, n, h, w, c).transpose(0, 2, 1, 3, 4)
        grid = grid.reshape(n * h, n * w, c).astype(np.float64) / (levels - 1)
        return grid[..., 0] if c == 1 else grid

    fig, panels = _panels(archs, cols, "data", where, 2.4)
    for ax, c, path in panels:
        d = np.load(path)
        ax.imshow(tile(d["data" if c == "data" else "samples"], int(d["levels"])),
                  cmap="gray_r", vmin=0, vmax=1)
    name = f"samples_{ds}.png"
    fig.suptitle(f"{ds}: flow samples (arch x backend, first seed) and test images", fontsize=9)
    fig.savefig(out_dir / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [f"![samples, {ds}]({name})", ""]


def _figure(data, x, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import seaborn as sns

    g = sns.relplot(data=data, x=x, y="ms", hue="backend", style="op", col="arch",
                    kind="line", marker="o", col_wrap=min(4, data["arch"].nunique()),
                    height=3.2, facet_kws={"sharey": False})
    g.set(xscale="log", yscale="log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    for ax in g.axes.flat:  # label the measured points, not log-scale minor ticks
        ax.set_xticks(sorted(data[x].unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    g.set_axis_labels(x, "median time (ms)")
    g.figure.suptitle(title, y=1.03)
    g.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(g.figure)
