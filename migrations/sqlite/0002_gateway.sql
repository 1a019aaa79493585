-- The model gateway: per-session tokens, and what each API call used.
CREATE TABLE gateway_tokens (
    token      TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX gateway_tokens_session ON gateway_tokens (session_id);

CREATE TABLE api_usage (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id         TEXT NOT NULL,
    owner              TEXT NOT NULL,
    at                 BIGINT NOT NULL,
    api                TEXT NOT NULL,
    model              TEXT,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_usd           DOUBLE PRECISION NOT NULL
);
CREATE INDEX api_usage_session ON api_usage (session_id);
CREATE INDEX api_usage_owner ON api_usage (owner, at);
