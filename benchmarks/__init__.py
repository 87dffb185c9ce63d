"""The harness: a matrix (``matrix``) expands into typed cells (``cell``); the runner
(``runner``) measures each in a fresh worker process (``worker``: ``timing``,
``training`` + ``metrics``, ``flops``); rows go to the results file (``results``) and the
report (``report``) reads them; ``cli`` is the ``flowbench`` command, ``suite`` the asv
benchmarks."""
