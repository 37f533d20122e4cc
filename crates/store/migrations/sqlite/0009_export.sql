-- Pushing sign-in and audit events to a SIEM (SEC-10). A shipper follows each
-- log by a cursor, so both need sequence numbers that appear in commit order:
-- the audit log has them (`seq`, max + 1 under a unique key); sign-in events
-- get theirs here. Each sink's cursors are advanced by compare-and-set, so with
-- several instances every event is claimed by one of them.

ALTER TABLE signin_log ADD COLUMN seq INTEGER;
UPDATE signin_log SET seq = rowid;
CREATE UNIQUE INDEX signin_log_seq ON signin_log (seq);

-- SQLite runs one writer at a time, so max + 1 at insert is commit order.
CREATE TRIGGER signin_log_number AFTER INSERT ON signin_log
    WHEN NEW.seq IS NULL
BEGIN
    UPDATE signin_log SET seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM signin_log)
    WHERE rowid = NEW.rowid;
END;

CREATE TABLE export_cursors (
    sink                TEXT NOT NULL,
    stream              TEXT NOT NULL,
    position            INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (sink, stream)
);
