-- Which tenant an external host belongs to (SEC-12: one origin, one tenant).
-- A host is claimed by the first app a tenant publishes on it and released when
-- the tenant's last app there goes; no other tenant can publish on it meanwhile.
CREATE TABLE app_hosts (
    host        TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);

-- Hosts already in use go to the tenant of their oldest app; apps of any other
-- tenant on the same host are then reported as violations and not served.
INSERT INTO app_hosts (host, tenant_id, created_at)
SELECT a.external_host, a.tenant_id, a.created_at
FROM apps a
WHERE NOT EXISTS (
    SELECT 1 FROM apps b
    WHERE b.external_host = a.external_host
      AND (b.created_at < a.created_at OR (b.created_at = a.created_at AND b.id < a.id))
);
