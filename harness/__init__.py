"""Distributed harness for Hessian and loss-landscape analysis of vision models."""

__version__ = "0.1.0"

from harness.store import load  # noqa: E402  (public read API)

__all__ = ["load", "__version__"]
