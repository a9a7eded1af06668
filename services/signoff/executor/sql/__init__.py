"""SQL migrations of the executor schema (applied by signoff.runtime.migrations)."""
