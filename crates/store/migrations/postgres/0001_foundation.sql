-- Foundation schema: tenants, directory objects, OAuth/OIDC state, keys, logs.
-- Timestamps are Unix seconds (BIGINT); flags are 0/1 (BIGINT) so that the same
-- queries run through sqlx's Any driver on PostgreSQL and SQLite.

CREATE TABLE tenants (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    display_name        TEXT NOT NULL,
    is_system           BIGINT NOT NULL,
    lockout_threshold   BIGINT NOT NULL,
    lockout_seconds     BIGINT NOT NULL,
    require_mfa         BIGINT NOT NULL,
    created_at          BIGINT NOT NULL
);

CREATE TABLE domains (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    verified            BIGINT NOT NULL,
    verification_token  TEXT NOT NULL,
    auth_mode           TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
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
    enabled             BIGINT NOT NULL,
    mfa_required        BIGINT NOT NULL,
    totp_sealed         BYTEA,
    totp_enrolled_at    BIGINT,
    totp_last_step      BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (tenant_id, username)
);

CREATE TABLE recovery_codes (
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_digest         BYTEA NOT NULL,
    used_at             BIGINT,
    PRIMARY KEY (user_id, code_digest)
);

CREATE TABLE groups (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    source              TEXT NOT NULL,
    external_id         TEXT,
    created_at          BIGINT NOT NULL,
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
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (user_id, role)
);

CREATE TABLE oauth_clients (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    name                TEXT NOT NULL,
    secret_digest       BYTEA,
    redirect_uris       TEXT NOT NULL,
    post_logout_uris    TEXT NOT NULL,
    grant_types         TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    builtin             BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, client_id)
);

CREATE TABLE signin_flows (
    id_digest           BYTEA PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    data                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL
);
CREATE INDEX signin_flows_expiry ON signin_flows (expires_at);

CREATE TABLE sessions (
    id_digest           BYTEA PRIMARY KEY,
    id                  TEXT NOT NULL UNIQUE,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    auth_time           BIGINT NOT NULL,
    mfa_at              BIGINT,
    amr                 TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    ended_at            BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE auth_codes (
    code_digest         BYTEA PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id          TEXT,
    redirect_uri        TEXT NOT NULL,
    scope               TEXT NOT NULL,
    nonce               TEXT,
    code_challenge      TEXT NOT NULL,
    auth_time           BIGINT NOT NULL,
    amr                 TEXT NOT NULL,
    family_id           TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    used_at             BIGINT
);

CREATE TABLE refresh_tokens (
    token_digest        BYTEA PRIMARY KEY,
    family_id           TEXT NOT NULL,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id          TEXT,
    scope               TEXT NOT NULL,
    auth_time           BIGINT NOT NULL,
    amr                 TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    family_expires_at   BIGINT NOT NULL,
    used_at             BIGINT,
    revoked_at          BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE device_codes (
    device_code_digest  BYTEA PRIMARY KEY,
    user_code_digest    BYTEA NOT NULL UNIQUE,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id           TEXT NOT NULL,
    scope               TEXT NOT NULL,
    status              TEXT NOT NULL,
    user_id             TEXT REFERENCES users(id) ON DELETE CASCADE,
    auth_time           BIGINT,
    amr                 TEXT,
    interval_secs       BIGINT NOT NULL,
    last_poll_at        BIGINT,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid                 TEXT PRIMARY KEY,
    alg                 TEXT NOT NULL,
    private_sealed      BYTEA NOT NULL,
    public_jwk          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    retired_at          BIGINT,
    publish_until       BIGINT
);

CREATE TABLE lockouts (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    account             TEXT NOT NULL,
    location            TEXT NOT NULL,
    failures            BIGINT NOT NULL,
    lockout_count       BIGINT NOT NULL,
    locked_until        BIGINT NOT NULL,
    last_failure_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, account, location)
);

CREATE TABLE familiar_networks (
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    network             TEXT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    PRIMARY KEY (user_id, network)
);

CREATE TABLE signin_log (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    at                  BIGINT NOT NULL,
    username            TEXT NOT NULL,
    user_id             TEXT,
    client_id           TEXT,
    ip                  TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    detail              TEXT NOT NULL
);
CREATE INDEX signin_log_tenant_at ON signin_log (tenant_id, at);

CREATE TABLE audit_log (
    seq                 BIGINT PRIMARY KEY,
    tenant_id           TEXT,
    at                  BIGINT NOT NULL,
    actor               TEXT NOT NULL,
    action              TEXT NOT NULL,
    target              TEXT NOT NULL,
    detail              TEXT NOT NULL,
    prev_hash           BYTEA NOT NULL,
    hash                BYTEA NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, seq);

-- The audit log is append-only: rows are never changed or removed.
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE setup_codes (
    code_digest         BYTEA PRIMARY KEY,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    used_at             BIGINT
);
