-- Approvals from chat (permission_mode = "ask"): an agent's tool call that waits for a
-- person. `outcome` is NULL while it waits; `sent_at` is when the answer reached the
-- agent (an answer stored but not sent is sent when the session's task starts again).
CREATE TABLE approvals (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    tool        TEXT NOT NULL,
    summary     TEXT NOT NULL,
    input       TEXT NOT NULL,
    outcome     TEXT,
    answered_by TEXT,
    why         TEXT,
    created_at  BIGINT NOT NULL,
    answered_at BIGINT,
    sent_at     BIGINT,
    UNIQUE (session_id, request_id)
);
CREATE INDEX approvals_session ON approvals (session_id, created_at);

-- Where a front end showed an approval (its message), so a reaction or an edit finds it.
CREATE TABLE approval_messages (
    approval_id TEXT NOT NULL,
    frontend    TEXT NOT NULL,
    message_ref TEXT NOT NULL,
    PRIMARY KEY (approval_id, frontend)
);
CREATE INDEX approval_messages_ref ON approval_messages (frontend, message_ref);
