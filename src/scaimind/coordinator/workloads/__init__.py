"""Workloads: what a job type runs (training, evaluation). A workload describes its process and
reads its output; it sees the manager only through the narrow `JobHost` protocol."""
