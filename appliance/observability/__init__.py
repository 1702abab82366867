"""Operator observability: Prometheus metrics (/metrics) and the access log."""
