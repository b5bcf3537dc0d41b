"""How asdx's CPU threads behave on a machine shared with other work.

Wait policy. torch's CPU thread pool is OpenMP (libgomp in the Linux wheels). By default an OpenMP
thread that has finished its share of a parallel loop spins before it sleeps, burning a core that
another process (or a lagging thread of the same loop) needs. With 2 other CPU-bound processes on the
host, `asdx run ae --epochs 20` took 309 s that way and 50 s with OMP_WAIT_POLICY=PASSIVE, under which
waiting threads sleep at once (issue 20; benchmarks/busy_host.py). libgomp reads the variable once,
when it is loaded, i.e. when torch is first imported. So `import asdx` (this module is the first thing
asdx/__init__.py runs) sets OMP_WAIT_POLICY=PASSIVE unless the environment names a policy already.
If torch was imported before asdx, it is too late for this process: `asdx info` says so, and the fix
is to import asdx first or to export OMP_WAIT_POLICY=PASSIVE before starting Python.

Thread count. Unchanged: torch's default (every core asdx may run on), or `asdx --threads N` /
`asdx.set_num_threads(n)` / OMP_NUM_THREADS. It does not follow the momentary load of the host,
because the AE's scores depend on the thread count (float sums in another order): a result must not
change with what else happened to run on the host, `asdx score` must reproduce a run's scores, and a
resumed run must match an uninterrupted one. The passive policy alone removes the waste: in
benchmarks/busy_host.py the run's CPU time stays the same beside two CPU-bound processes (9.1 s
alone, 9.3 s beside them; the old policy: 16.5 s and 40.1 s), and `--threads 1` adds little there.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"


def _apply_wait_policy() -> dict:
    """Sets OMP_WAIT_POLICY=PASSIVE unless set; returns what happened, for asdx.info()."""
    torch_loaded = "torch" in sys.modules
    given = os.environ.get(WAIT_POLICY)
    if given is None:
        os.environ[WAIT_POLICY] = PASSIVE
    return {"value": os.environ[WAIT_POLICY], "set_by_asdx": given is None, "torch_loaded_before_asdx": torch_loaded}


STATE = _apply_wait_policy()


def wait_policy() -> str:
    """The OpenMP wait policy torch's threads run with, in words (for asdx.info() and `asdx info`)."""
    if not STATE["set_by_asdx"]:
        return f"{STATE['value']} (from the environment)"
    if STATE["torch_loaded_before_asdx"]:
        return ("OpenMP's default (spinning): torch was imported before asdx, too late to set OMP_WAIT_POLICY; "
                "import asdx first, or export OMP_WAIT_POLICY=PASSIVE")
    return f"{STATE['value']} (set by asdx)"
