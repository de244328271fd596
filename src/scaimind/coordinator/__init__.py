"""The reference MindCoordinator: a real scheduler and executor for small local training jobs.

Run it with `scaimind coordinator --port P --data-dir DIR [--inventory FILE]` (or
`python -m scaimind.coordinator`); the shared secret comes from SCAIMIND_API_SECRET. Embed it
with `scaimind.coordinator.server.start_coordinator(CoordinatorConfig(...))`.

Layout (each sub-package's docstring states its rule; tests/test_architecture.py holds the layers:
rpc → workloads → jobs → data, executors → persistence, worker):
- `server.py`: the composition root; it opens the store, picks the executor, builds the job
  manager with its workloads and serves the RPC servicers. Shared by every layer: `config.py`,
  `status.py` (the error type), `messages.py` (job states, protobuf messages), `jobenv.py`.
- `rpc/`: gRPC servicers, metadata check, paging.
- `jobs/`: state machine, commands, scheduler, runner, checkpoints, request rules.
- `workloads/`: what a job type runs (training, evaluation), behind a narrow protocol.
- `executors/`: where and how a process runs (sandbox, child process, local or Ray, inventory).
- `data/`: tenant data sources, scaidrive, which paths a tenant may name, dataset cache.
- `persistence/`: the SQLite stores (`coordinator.db`, `ops.db`).
- `worker/`: the child processes (trainer, evaluator, model, datasets).

Shutdown and restart: a clean stop re-queues running jobs from a fresh checkpoint; after a crash
they come back PREEMPTED and are retried when max_retries allows; runs that outlive the
coordinator (Ray jobs) are adopted by the next start.
"""
