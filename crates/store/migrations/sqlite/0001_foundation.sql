-- Foundation schema: tenants, directory objects, OAuth/OIDC state, keys, logs.
-- Timestamps are Unix seconds (INTEGER); flags are 0/1 (INTEGER) so that the same
-- queries run through sqlx's Any driver on PostgreSQL and SQLite.

CREATE TABLE tenants (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    display_name        TEXT NOT NULL,
    is_system           INTEGER NOT NULL,
    lockout_threshold   INTEGER NOT NULL,
    lockout_seconds     INTEGER NOT NULL,
    require_mfa         INTEGER NOT NULL,
    created_at          INTEGER NOT NULL
);

CREATE TABLE domains (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    verified            INTEGER NOT NULL,
    verification_token  TEXT NOT NULL,
    auth_mode           TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
-- A verified domain belongs to one tenant only.
CREATE UNIQUE INDEX domains_verified_once ON domains (name) WHERE verified = 1;

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    username            TEXT NOT NULL,
    display_name        TEXT NOT NULL,
    email               TEXT,
    source              TEXT NOT NULL,
    external_id         TEXT,
    password_hash       TEXT,
    enabled             INTEGER NOT NULL,
    mfa_required        INTEGER NOT NULL,
    totp_sealed         BLOB,
    totp_enrolled_at    INTEGER,
    totp_last_step      INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (tenant_id, username)
);

CREATE TABLE recovery_codes (
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_digest         BLOB NOT NULL,
    used_at             INTEGER,
    PRIMARY KEY (user_id, code_digest)
);

CREATE TABLE groups (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    source              TEXT NOT NULL,
    external_id         TEXT,
    created_at          INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE group_members (
    group_id            TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE role_assignments (
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role                TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (user_id, role)
);

CREATE TABLE oauth_clients (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    name                TEXT NOT NULL,
    secret_digest       BLOB,
    redirect_uris       TEXT NOT NULL,
    post_logout_uris    TEXT NOT NULL,
    grant_types         TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    builtin             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, client_id)
);

CREATE TABLE signin_flows (
    id_digest           BLOB PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    data                TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL
);
CREATE INDEX signin_flows_expiry ON signin_flows (expires_at);

CREATE TABLE sessions (
    id_digest           BLOB PRIMARY KEY,
    id                  TEXT NOT NULL UNIQUE,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    auth_time           INTEGER NOT NULL,
    mfa_at              INTEGER,
    amr                 TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    ended_at            INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE auth_codes (
    code_digest         BLOB PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id          TEXT,
    redirect_uri        TEXT NOT NULL,
    scope               TEXT NOT NULL,
    nonce               TEXT,
    code_challenge      TEXT NOT NULL,
    auth_time           INTEGER NOT NULL,
    amr                 TEXT NOT NULL,
    family_id           TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    used_at             INTEGER
);

CREATE TABLE refresh_tokens (
    token_digest        BLOB PRIMARY KEY,
    family_id           TEXT NOT NULL,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id          TEXT,
    scope               TEXT NOT NULL,
    auth_time           INTEGER NOT NULL,
    amr                 TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    family_expires_at   INTEGER NOT NULL,
    used_at             INTEGER,
    revoked_at          INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE device_codes (
    device_code_digest  BLOB PRIMARY KEY,
    user_code_digest    BLOB NOT NULL UNIQUE,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    scope               TEXT NOT NULL,
    status              TEXT NOT NULL,
    user_id             TEXT REFERENCES users(id) ON DELETE CASCADE,
    auth_time           INTEGER,
    amr                 TEXT,
    interval_secs       INTEGER NOT NULL,
    last_poll_at        INTEGER,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid                 TEXT PRIMARY KEY,
    alg                 TEXT NOT NULL,
    private_sealed      BLOB NOT NULL,
    public_jwk          TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    retired_at          INTEGER,
    publish_until       INTEGER
);

CREATE TABLE lockouts (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    account             TEXT NOT NULL,
    location            TEXT NOT NULL,
    failures            INTEGER NOT NULL,
    lockout_count       INTEGER NOT NULL,
    locked_until        INTEGER NOT NULL,
    last_failure_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, account, location)
);

CREATE TABLE familiar_networks (
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    network             TEXT NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    PRIMARY KEY (user_id, network)
);

CREATE TABLE signin_log (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    at                  INTEGER NOT NULL,
    username            TEXT NOT NULL,
    user_id             TEXT,
    client_id           TEXT,
    ip                  TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    detail              TEXT NOT NULL
);
CREATE INDEX signin_log_tenant_at ON signin_log (tenant_id, at);

CREATE TABLE audit_log (
    seq                 INTEGER PRIMARY KEY,
    tenant_id           TEXT,
    at                  INTEGER NOT NULL,
    actor               TEXT NOT NULL,
    action              TEXT NOT NULL,
    target              TEXT NOT NULL,
    detail              TEXT NOT NULL,
    prev_hash           BLOB NOT NULL,
    hash                BLOB NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, seq);

-- The audit log is append-only: rows are never changed or removed.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TABLE setup_codes (
    code_digest         BLOB PRIMARY KEY,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    used_at             INTEGER
);
