"""SQL migrations shared by every service schema (inbox, outbox, dead letters)."""
