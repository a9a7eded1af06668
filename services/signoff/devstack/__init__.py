"""Embedded infrastructure for local runs and tests: a Kafka-protocol broker (Tansu) and a PostgreSQL server,
both started from pip wheels as child processes that die with their parent."""

from signoff.devstack.errors import DevStackError
from signoff.devstack.stack import DevStack

__all__ = ["DevStack", "DevStackError"]
