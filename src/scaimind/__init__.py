"""ScaiMind: training orchestration for ScaiGrid."""

__version__ = "0.1.0"
