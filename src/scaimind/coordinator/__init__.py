"""The reference MindCoordinator: a real scheduler and executor for small local training jobs."""
