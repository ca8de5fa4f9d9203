"""The shared edges every component stands on: settings, Kafka and ClickHouse clients, topics,
the producer client, dead letters, logging and metrics. See runtime/README.md."""
