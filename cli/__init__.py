"""The `atlas` command line.

Before torch loads, OpenMP's idle threads are told to sleep rather than spin
(``OMP_WAIT_POLICY=PASSIVE``, unless the environment says otherwise): spinning threads fight
whatever else shares the cores (a lab server, CI, tests beside a long run), which made scoring
6-8x slower beside two busy processes, and passive waiting costs nothing alone
(``bench/scoring_throughput.py --contention``)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
