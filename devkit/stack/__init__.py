"""The local stack the project starts itself: Kafka (KRaft, one node) and a ClickHouse server.

There is no Docker engine on the developers' machines or in CI, so the stack is plain processes:
the Kafka broker from its Maven Central jars, ClickHouse from Debian's package, both bound to
127.0.0.1 with their data under ``settings.data_dir``. ``billing stack up|down|status|topics``
drives it (:mod:`devkit.stack.cli`); tests use :mod:`devkit.stack.lifecycle` and the server
classes in :mod:`devkit.stack.kafka` and :mod:`devkit.stack.clickhouse` directly.
"""
