-- When `firstmate sessions rm` / `prune` (or sessions.keep_stopped) removed an ended
-- session's container and volumes (ms since the epoch). It counts for the end it
-- follows: a session resumed and ended again has ended_at > removed_at.
ALTER TABLE sessions ADD COLUMN removed_at BIGINT;
