"""The notifier: tells approvers about gates (Slack, Teams, e-mail, signed webhooks) and tells them the outcome.

``domain/`` holds the pure rules (no I/O): resolving gate events into views, rendering per channel, routing and the
retry schedule. Handlers, the repository and entrypoints build on it.
"""
