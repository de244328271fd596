"""Tenant data: where sources are (local roots, scaidrive://), which paths a tenant may name, the
dataset cache, and the ValidateData checks. No job state."""
