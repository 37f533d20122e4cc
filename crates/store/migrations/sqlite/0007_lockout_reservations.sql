-- Smart lockout reserves an attempt before a password is checked (PTA-9): the
-- attempts being checked right now count against the threshold with the
-- failures, so no burst, on one instance or many, checks more passwords than the
-- threshold allows. Reservations of a crashed instance lapse at `in_flight_until`.

ALTER TABLE lockouts ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lockouts ADD COLUMN in_flight_until INTEGER NOT NULL DEFAULT 0;
