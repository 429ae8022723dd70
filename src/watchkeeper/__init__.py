"""Watchkeeper: security monitoring and incident response."""

__version__ = "0.1.0"
