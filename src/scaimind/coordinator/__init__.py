"""The reference MindCoordinator: a real scheduler and executor for small local training jobs.

Run it with `scaimind coordinator --port P --data-dir DIR [--inventory FILE]` (or
`python -m scaimind.coordinator`); the shared secret comes from SCAIMIND_API_SECRET. Embed it
with `scaimind.coordinator.server.start_coordinator(CoordinatorConfig(...))`.

- Inventory (`inventory.py`): by default one node `node-local` whose slots are this machine's
  CPU cores (gpu_type `CPU`). A JSON file `[{"node_id", "hostname", "gpu_type", "gpu_count",
  "labels"}]` declares simulated nodes instead; their slots are bookkeeping only — every job runs
  as a process on this machine.
- State (`store.py`): SQLite in `DIR/coordinator.db` (jobs, logs, metric points, checkpoints,
  idempotency keys, node drain state). Each job works in `DIR/jobs/<job_id>/`: spec and metrics
  files per attempt, `checkpoints/`, and `model/` unless output_config.output_path is set.
- Jobs (`manager.py`): state machine, scheduler, preemption, retries; the process of a job type
  is a `Workload` (`workloads.py` runs the built-in trainer or a CUSTOM script).
- Shutdown and restart (`server.py`): a clean stop re-queues running jobs from a fresh
  checkpoint; after a crash they come back PREEMPTED and are retried when max_retries allows.
"""
