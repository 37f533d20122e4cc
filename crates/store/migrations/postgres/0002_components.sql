-- On-prem components (connectors, agents), their certificate authorities,
-- registration tokens, revocations and renewal leases.

CREATE TABLE certificate_authorities (
    kind                TEXT PRIMARY KEY,
    cert_pem            TEXT NOT NULL,
    key_sealed          BYTEA NOT NULL,
    crl_number          BIGINT NOT NULL,
    created_at          BIGINT NOT NULL
);

CREATE TABLE connector_groups (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    is_default          BIGINT NOT NULL,
    config_version      BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE components (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind                TEXT NOT NULL,
    name                TEXT NOT NULL,
    group_id            TEXT REFERENCES connector_groups(id),
    serial              TEXT NOT NULL UNIQUE,
    previous_serial     TEXT,
    previous_valid_until BIGINT,
    public_key          BYTEA NOT NULL,
    key_id              TEXT NOT NULL,
    cert_issued_at      BIGINT NOT NULL,
    not_after           BIGINT NOT NULL,
    version             TEXT NOT NULL,
    registered_by       TEXT NOT NULL,
    registered_at       BIGINT NOT NULL,
    last_seen_at        BIGINT,
    last_seen_ip        TEXT
);
CREATE INDEX components_tenant ON components (tenant_id, kind);
CREATE INDEX components_previous_serial ON components (previous_serial);

CREATE TABLE revoked_certificates (
    serial              TEXT PRIMARY KEY,
    ca_kind             TEXT NOT NULL,
    tenant_id           TEXT NOT NULL,
    component_id        TEXT NOT NULL,
    reason              TEXT NOT NULL,
    revoked_at          BIGINT NOT NULL,
    not_after           BIGINT NOT NULL
);
CREATE INDEX revoked_certificates_ca ON revoked_certificates (ca_kind, not_after);

CREATE TABLE registration_tokens (
    token_digest        BYTEA PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind                TEXT NOT NULL,
    group_id            TEXT REFERENCES connector_groups(id) ON DELETE CASCADE,
    created_by          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    uses_left           BIGINT NOT NULL
);

CREATE TABLE renewal_leases (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind                TEXT NOT NULL,
    component_id        TEXT NOT NULL,
    expires_at          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);
