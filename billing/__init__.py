"""Usage-billing pipeline for an AI inference API.

The package is split by what each part owns:

- ``billing.ledger``    the billing rules: a pure state machine, no I/O (it alone decides money)
- ``billing.replay``    the offline oracle: the same rules over a JSON-lines file
- ``devkit.stack``     the local Kafka (KRaft) + ClickHouse stack the project starts itself
- ``streams``           the Faust worker: Kafka in, ledger, Kafka out
- ``sinks``             ClickHouse tables and the sink that fills them
- ``schemas``           the Avro contracts (``.avsc``) and the codec
"""

__version__ = "0.1.0"
