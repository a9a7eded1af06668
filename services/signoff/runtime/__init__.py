"""The shared runtime every signoff service runs on: settings, logging, database, Kafka, health and metrics."""
