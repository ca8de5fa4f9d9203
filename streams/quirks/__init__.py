"""Every workaround for Faust's handling of offsets around rebalances, in one place: see
streams/README.md."""
