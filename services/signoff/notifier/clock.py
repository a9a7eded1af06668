"""Where the notifier gets the time from: the handler, dispatcher and scheduler take a `Clock`; production wires
`SystemClock`, tests a `FixedClock` they move by hand (reminders and escalations are tested without sleeping).
Every service uses the same clock types (the executor too)."""

from signoff.approval.domain.clock import Clock, FixedClock, SystemClock

__all__ = ["Clock", "FixedClock", "SystemClock"]
