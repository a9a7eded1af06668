"""The executor: runs pipelines in Harness's YAML shape, stopping at approval steps until a gate decides.

`signoff.executor.domain` holds the pure rules (pipeline parsing and validation, expressions, the execution state
machine); handlers, the repository and the entrypoints wrap them with I/O.
"""
