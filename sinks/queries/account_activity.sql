-- What ClickHouse holds for one account: events per table, first and last event time.
-- Params: account_id.
-- No rows at all: ClickHouse knows nothing of the account (billing invoice says "no such
-- account"). FINAL, so a redelivered batch is not counted twice.
SELECT source, events, first_seen, last_seen
FROM
(
    SELECT 'rated_usage' AS source, count() AS events, min(timestamp) AS first_seen,
           max(timestamp) AS last_seen
    FROM rated_usage FINAL
    WHERE account_id = %(account_id)s
    GROUP BY account_id
    UNION ALL
    SELECT 'account_state_events' AS source, count() AS events, min(timestamp) AS first_seen,
           max(timestamp) AS last_seen
    FROM account_state_events FINAL
    WHERE account_id = %(account_id)s
    GROUP BY account_id
)
ORDER BY source;
