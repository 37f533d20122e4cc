-- Conditional access (SEC-2) and risk (SEC-10): per-tenant named locations and
-- policies, and the risk level an administrator set for a user. A policy's
-- conditions and grants are one JSON document (`postern_policy::PolicyRules`),
-- read and checked by the service; references in it are IDs of this tenant.

CREATE TABLE named_locations (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    -- Comma-separated CIDR ranges.
    ranges      TEXT NOT NULL,
    trusted     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE access_policies (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,
    rules       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE user_risk (
    user_id     TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    level       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    set_by      TEXT NOT NULL,
    set_at      INTEGER NOT NULL
);

-- Impossible travel reads a user's last successful sign-in.
CREATE INDEX signin_log_user_at ON signin_log (user_id, at);
