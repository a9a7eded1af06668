"""SQL migrations of the api schema (credentials)."""
