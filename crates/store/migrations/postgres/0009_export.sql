-- Pushing sign-in and audit events to a SIEM (SEC-10). A shipper follows each
-- log by a cursor, so both need sequence numbers that appear in commit order:
-- the audit log has them (`seq`, max + 1 under a unique key); sign-in events
-- get theirs here. Each sink's cursors are advanced by compare-and-set, so with
-- several instances every event is claimed by one of them.

ALTER TABLE signin_log ADD COLUMN seq BIGINT;
UPDATE signin_log SET seq = numbered.n
    FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY at, id) AS n FROM signin_log) AS numbered
    WHERE signin_log.id = numbered.id;
CREATE UNIQUE INDEX signin_log_seq ON signin_log (seq);

-- A sequence would hand out numbers in start order, not commit order (a
-- cursor could pass a number whose row commits later). Numbering takes a
-- transaction-scoped lock instead, held until the insert commits, so numbers
-- become visible in order and without gaps.
CREATE FUNCTION signin_log_number() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.signin_log.seq'));
    NEW.seq := COALESCE((SELECT MAX(seq) FROM signin_log), 0) + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER signin_log_number BEFORE INSERT ON signin_log
    FOR EACH ROW EXECUTE FUNCTION signin_log_number();

CREATE TABLE export_cursors (
    sink                TEXT NOT NULL,
    stream              TEXT NOT NULL,
    position            BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (sink, stream)
);
