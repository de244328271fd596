"""The RPC surface: gRPC servicers, the caller's metadata check, paging and the messages they
build. Servicers translate requests into calls on the job manager and its query API; they hold no
state and never touch a store."""
