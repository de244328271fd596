"""HTTP routers of the module; `module_router()` assembles them."""
