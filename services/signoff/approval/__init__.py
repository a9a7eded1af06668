"""The approval service: the source of truth for gates, votes and their audit trail.

``domain/`` holds the pure rules (no I/O); handlers, the repository and entrypoints build on it.
"""
