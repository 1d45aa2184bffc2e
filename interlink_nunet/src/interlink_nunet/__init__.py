"""interLink plugin that runs Kubernetes pods as NuNet DMS jobs."""

__version__ = "0.1.0"
