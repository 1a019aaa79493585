CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    instance           TEXT NOT NULL,
    agent              TEXT NOT NULL,
    protocol           TEXT NOT NULL,
    image              TEXT NOT NULL,
    model              TEXT,
    repo               TEXT,
    branch             TEXT,
    owner              TEXT NOT NULL,
    frontend           TEXT NOT NULL,
    room               TEXT NOT NULL,
    first_prompt       TEXT NOT NULL,
    idle_timeout_ms    BIGINT,
    state              TEXT NOT NULL,
    state_detail       TEXT,
    container_id       TEXT,
    agent_session_id   TEXT,
    log_cursor_ns      BIGINT NOT NULL DEFAULT 0,
    log_cursor_count   BIGINT NOT NULL DEFAULT 0,
    next_seq           BIGINT NOT NULL DEFAULT 1,
    turns              BIGINT NOT NULL DEFAULT 0,
    input_tokens       BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0,
    agent_cost_usd     DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    started_at         BIGINT,
    last_activity_at   BIGINT NOT NULL,
    ended_at           BIGINT
);
CREATE INDEX sessions_state ON sessions (instance, state);
CREATE INDEX sessions_room ON sessions (frontend, room);

CREATE TABLE events (
    session_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE prompts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    body       TEXT NOT NULL,
    author     TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX prompts_pending ON prompts (session_id, status, id);

CREATE TABLE bindings (
    session_id    TEXT NOT NULL,
    frontend      TEXT NOT NULL,
    thread_ref    TEXT NOT NULL,
    delivered_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, frontend)
);
CREATE INDEX bindings_thread ON bindings (frontend, thread_ref);
