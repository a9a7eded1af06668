"""SQL migrations of the approval schema."""
