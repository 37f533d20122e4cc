-- Published apps (application proxy), their assignments, and the front door's
-- cookie encryption keys.

CREATE TABLE apps (
    id                      TEXT PRIMARY KEY,
    tenant_id               TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                    TEXT NOT NULL,
    external_host           TEXT NOT NULL,
    path_prefix             TEXT NOT NULL,
    internal_url            TEXT NOT NULL,
    preauth                 TEXT NOT NULL,
    connector_group_id      TEXT NOT NULL REFERENCES connector_groups(id),
    backend_timeout_secs    INTEGER NOT NULL,
    validate_backend_tls    INTEGER NOT NULL,
    translate_headers       INTEGER NOT NULL,
    translate_links         INTEGER NOT NULL,
    identity_headers        TEXT NOT NULL,
    client_id               TEXT NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);
-- An external address serves one app, whatever the tenant.
CREATE UNIQUE INDEX apps_address ON apps (external_host, path_prefix);

CREATE TABLE app_assignments (
    app_id                  TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    principal_kind          TEXT NOT NULL,
    principal_id            TEXT NOT NULL,
    PRIMARY KEY (app_id, principal_kind, principal_id)
);

CREATE TABLE cookie_keys (
    kid                     TEXT PRIMARY KEY,
    key_sealed              BLOB NOT NULL,
    created_at              INTEGER NOT NULL,
    retired_at              INTEGER
);
