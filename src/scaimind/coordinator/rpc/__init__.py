"""The RPC surface: the gRPC servicers (one module per service), the caller's metadata check and
error translation (`auth.py`), paging (`paging.py`). Servicers translate requests into manager
commands and reads (`JobManager.reads`); they hold no state and never write to a store."""
