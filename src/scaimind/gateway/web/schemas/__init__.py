"""Request schemas (pydantic) of the HTTP API."""
