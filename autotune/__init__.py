"""autotune: find the best vLLM serving configuration for a model, a workload and SLOs."""

__version__ = "0.1.0"
