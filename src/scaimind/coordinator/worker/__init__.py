"""The child processes (run inside the job sandbox, never by the coordinator itself): the built-in
trainer, the evaluator, the NumPy model and dataset readers. Imports nothing else of the
coordinator: a worker must start with the standard library, NumPy and itself."""
