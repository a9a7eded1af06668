"""The api role: signoff's authenticated front door (identity, /api/v1 with OpenAPI, and the CLI's server)."""
