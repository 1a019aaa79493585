-- The status message of a session thread, where the front end keeps it in the database
-- (Discord; Matrix keeps it in its own store).
ALTER TABLE bindings ADD COLUMN status_ref TEXT;
