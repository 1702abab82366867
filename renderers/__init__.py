"""Renderers: pure functions of (task input, workdir) -> output files + progress messages.

A renderer never sees HTTP, SQLite or a dialect. See renderers/base.py for the contract.
"""
