"""Kafka in a test suite: an embedded akfak broker (filled in by the testing work)."""
