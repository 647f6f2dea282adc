-- `event_time` becomes fixed-width UTC text, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so that comparing
-- the text compares the times.
--
-- Rows written before held RFC 3339 text, which drops the fraction's trailing zeros: `…:28Z`
-- sorted after `…:28.5Z`, and `event_time >= '…T03:00:00Z'` left out a record at 03:00:00.5.
-- Writers now store the fixed form; this rewrites the older rows' copies to it. `event_time` is
-- a query copy, neither hashed nor verified (the `event` text is authoritative and untouched),
-- so the append-only trigger is lifted for this one statement and put back as it was.
DROP TRIGGER IF EXISTS audit_records_no_update;
UPDATE audit_records SET event_time = CASE
    -- UTC with or without a fraction: pad (or cut) the fraction to six digits.
    WHEN event_time GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z'
        THEN substr(event_time, 1, 19) || '.000000Z'
    WHEN event_time GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9]*Z'
        THEN substr(event_time, 1, 20)
             || substr(substr(event_time, 21, length(event_time) - 21) || '000000', 1, 6) || 'Z'
    -- Another offset: SQLite converts it to UTC (its time functions keep milliseconds).
    ELSE coalesce(strftime('%Y-%m-%dT%H:%M:%f', event_time) || '000Z', event_time)
END
WHERE event_time NOT GLOB
    '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z';
CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
