"""Jobs: the runtime state of placed jobs (`runtime.py`, `core.py`), the commands (submit, cancel,
pause, resume, retry, drain), the scheduler, the runner that follows an attempt, checkpoints, the
request rules (`rules.py`), job folders (`jobfiles.py`) and the read API (`queries.py`). Knows job
*types* only through the `Workload` protocol; never imports a workload or the RPC layer."""
