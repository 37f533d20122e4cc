-- Which tenant an external host name belongs to (SEC-12: one origin, one
-- tenant). Names without a port: browsers share cookies across the ports of a
-- host. A host is claimed by the first app a tenant publishes on it and released
-- when the tenant's last app there goes; no other tenant can publish on it
-- meanwhile. Apps published before this table existed are claimed at start, the
-- oldest app of a host first (`Store::claim_hosts_of_existing_apps`).
CREATE TABLE app_hosts (
    host        TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);
