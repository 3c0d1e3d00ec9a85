"""The twistd plugin: `twistd akfak` (see akfak.tap for the options)."""

from twisted.application.service import ServiceMaker

akfak = ServiceMaker(
    "akfak", "akfak.tap", "A Kafka-compatible message broker (Apache Kafka's protocol and log format).",
    "akfak",
)
