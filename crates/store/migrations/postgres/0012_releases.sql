-- Signed releases of the postern binary (the binary in chunks, so any instance
-- streams it with bounded memory), each tenant's update policy, the lease that
-- lets one connector per group (one agent per tenant) update at a time, and
-- every component's update history (PTA-8).

CREATE TABLE releases (
    id                  TEXT PRIMARY KEY,
    version             TEXT NOT NULL,
    target              TEXT NOT NULL,
    channel             TEXT NOT NULL,
    manifest            TEXT NOT NULL,
    signature           TEXT NOT NULL,
    sha256              TEXT NOT NULL,
    size                BIGINT NOT NULL,
    min_upgrade_from    TEXT NOT NULL,
    notes_url           TEXT NOT NULL,
    ready               BIGINT NOT NULL,
    created_by          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    UNIQUE (version, target)
);

CREATE TABLE release_chunks (
    release_id          TEXT NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    seq                 BIGINT NOT NULL,
    data                BYTEA NOT NULL,
    PRIMARY KEY (release_id, seq)
);

CREATE TABLE update_policies (
    tenant_id           TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    channel             TEXT NOT NULL,
    pinned_version      TEXT,
    paused              BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

CREATE TABLE update_leases (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    scope               TEXT NOT NULL,
    component_id        TEXT NOT NULL,
    release_id          TEXT NOT NULL,
    expires_at          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, scope)
);

CREATE TABLE component_updates (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    component_id        TEXT NOT NULL,
    release_id          TEXT NOT NULL,
    from_version        TEXT NOT NULL,
    to_version          TEXT NOT NULL,
    state               TEXT NOT NULL,
    detail              TEXT NOT NULL,
    started_at          BIGINT NOT NULL,
    finished_at         BIGINT,
    seq                 BIGINT NOT NULL
);
CREATE INDEX component_updates_component ON component_updates (tenant_id, component_id, seq);
