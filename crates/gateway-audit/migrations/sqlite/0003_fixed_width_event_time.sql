-- `event_time` becomes fixed-width UTC text, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so that comparing
-- the text compares the times.
--
-- Rows written before held RFC 3339 text, which drops the fraction's trailing zeros: `…:28Z`
-- sorted after `…:28.5Z`, and `event_time >= '…T03:00:00Z'` left out a record at 03:00:00.5.
-- Writers now store the fixed form; this rewrites the older rows' copies to it. `event_time` is
-- a query copy, not hashed (the `event` text is authoritative and untouched; verification checks
-- the copy against it and takes either form), so the append-only trigger is lifted for this one
-- statement and put back as it was.
--
-- The whole seconds come from `strftime`, which also moves another offset to UTC; the fraction's
-- digits are the original ones (offsets are whole minutes), cut or padded to six. A value
-- `strftime` cannot read is left as it was.
DROP TRIGGER IF EXISTS audit_records_no_update;
UPDATE audit_records SET event_time = coalesce(
    strftime('%Y-%m-%dT%H:%M:%S', event_time) || '.'
        || substr(
            CASE WHEN substr(event_time, 20, 1) = '.'
                THEN substr(event_time, 21,
                    length(event_time) - 20 - length(ltrim(substr(event_time, 21), '0123456789')))
                ELSE '' END || '000000',
            1, 6)
        || 'Z',
    event_time)
WHERE event_time NOT GLOB
    '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z';
CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
