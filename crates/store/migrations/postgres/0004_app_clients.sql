-- The scheme of an app's external URL, so that its address and the callback of
-- its OIDC client can be rebuilt from the row; and a way to find the app a
-- client belongs to (such a client lives and dies with its app).

ALTER TABLE apps ADD COLUMN external_scheme TEXT NOT NULL DEFAULT 'https';
CREATE INDEX apps_client ON apps (tenant_id, client_id);
