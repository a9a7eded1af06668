"""signoff: event-driven approval gates for CD pipelines, on Kafka and PostgreSQL."""

__version__ = "0.1.0"
