"""hallu: activation-patching studies of LLM confidence, from a laptop CPU to a Ray cluster."""

__version__ = "0.1.0"
