"""Jobs: the runtime state of placed jobs, the commands (submit, cancel, pause, resume, retry),
the scheduler, the runner that follows an attempt, checkpoints and the request rules. Knows job
*types* only through the `Workload` protocol; never imports a workload."""
