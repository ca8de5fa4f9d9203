"""ClickHouse tables and the sink that fills them (see sinks/README.md).

- ``migrations/``, ``queries/``, ``sqlfiles``  the SQL: numbered migrations, analyst queries
- ``migrate``     applies the migrations in order and records each one in ``schema_migrations``
- ``clickhouse``  one writer interface for a server (clickhouse-driver) or embedded chdb
- ``rows``        canonical events -> table rows (pure)
- ``dedup``       keeps redelivered events out of the inserts that feed the summing rollups
- ``sink``        the Kafka consumer group: batches, inserts, then commits
- ``reconcile``   ClickHouse vs the ledger's snapshots, to the micro-dollar
- ``display``, ``cli``  the commands: sink run|migrate, sql, invoice, reconcile
"""
