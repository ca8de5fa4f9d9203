-- Quantities behind the invoice lines: units per product and meter for one account and month.
-- Params: account_id, period (YYYY-MM).
SELECT
    product,
    quantities.meter AS meter,
    sum(quantities.count) AS quantity
FROM rated_usage FINAL
ARRAY JOIN quantities
WHERE account_id = %(account_id)s AND billed_period = %(period)s
GROUP BY product, meter
ORDER BY product, meter;
