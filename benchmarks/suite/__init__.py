"""The asv suite: its own subpackage, so asv never mistakes harness functions for benchmarks.

asv (``benchmark_dir`` in asv.conf.json) imports every module here; their module-level code
imports no framework. Modules: bench_ops (time_ of each op), bench_compile (first-call
seconds), bench_training (test NLL after 200 steps), bench_memory (peakmem_ of build + one
log_prob). The grid (backend x arch x dim) and the FLOWBENCH_ASV_* variables that narrow
it are in _common.

    asv machine --yes                                       # once: ~/.asv-machine.json
    asv check --python=same                                 # import + signatures only
    asv run --quick --python=same --set-commit-hash HEAD    # this environment; saves results
    asv run main~5..main                                    # history, a virtualenv per commit
    asv publish && asv preview                              # .asv/html

Without --set-commit-hash, ``asv run --python=same`` shows results but saves none.
"""
