"""The `signoff` command."""
