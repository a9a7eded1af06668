"""The service roles `signoff dev up` starts, each as `python -m signoff ROLE` (a role is a click command
registered on the main group). Roles are added here as they are built."""

ROLES: tuple[str, ...] = ("approval", "executor", "notifier", "api")
