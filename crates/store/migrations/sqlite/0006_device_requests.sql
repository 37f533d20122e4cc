-- What a device authorization asks for, so the approval page can name it
-- (SEC-14): the component a registration is for (NULL for a command-line
-- sign-in) and the address the request came from.

ALTER TABLE device_codes ADD COLUMN component_name TEXT;
ALTER TABLE device_codes ADD COLUMN requested_from TEXT NOT NULL DEFAULT '';
