"""Corkboard: shared coordination state for multi-agent systems over HTTP and SSE."""

__version__ = "0.1.0"
