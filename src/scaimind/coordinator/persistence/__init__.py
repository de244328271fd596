"""SQLite stores: jobs, logs, metrics, checkpoints (`store.py`); evaluations, the dataset cache
and data-access tokens (`ops_store.py`). The only modules that see `sqlite3`."""
