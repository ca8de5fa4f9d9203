-- One account's invoices (postpaid month closes), newest month first, with what was paid against
-- each one by invoice_paid (credits purchased also pay invoices, oldest first, but the ledger does
-- not say which). Params: account_id.
SELECT
    id AS invoice_id,
    period,
    amount,
    issued_at,
    paid AS paid_by_invoice_payments
FROM
(
    SELECT invoice_id AS id, period, amount, timestamp AS issued_at
    FROM invoices FINAL
    WHERE account_id = %(account_id)s
) AS issued
ALL LEFT JOIN
(
    SELECT assumeNotNull(invoice_id) AS id, sum(amount) AS paid
    FROM credit_purchases FINAL
    WHERE account_id = %(account_id)s AND invoice_id IS NOT NULL
    GROUP BY id
) AS payments USING (id)
ORDER BY period DESC, invoice_id;
