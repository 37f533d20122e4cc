-- Abuse protection at the front door (SEC-9): an app's and a tenant's own
-- limits. NULL means the installation's default ([limits] of the service's
-- configuration).

-- Requests a second the app accepts, and the burst above it.
ALTER TABLE apps ADD COLUMN rate_limit_per_sec INTEGER;
ALTER TABLE apps ADD COLUMN rate_limit_burst INTEGER;
-- Largest request body forwarded to the app, in bytes; 0 means no limit.
ALTER TABLE apps ADD COLUMN max_body_bytes INTEGER;

-- Requests a second over all the tenant's apps, and the burst above it.
ALTER TABLE tenants ADD COLUMN rate_limit_per_sec INTEGER;
ALTER TABLE tenants ADD COLUMN rate_limit_burst INTEGER;
-- Sign-ins waiting on the tenant's pass-through authentication agents at once.
ALTER TABLE tenants ADD COLUMN max_pending_signins INTEGER;
