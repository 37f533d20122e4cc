//! Apps are served only on hosts their tenant may publish on (SEC-12): an app
//! published before host claims existed, or whose domain has since lost its
//! verification, gets an error page instead of its backend, so that no tenant's
//! backend ever answers on another tenant's origin. The store decides
//! ([`postern_store::Store::host_refusal`]); the answer is cached per app under
//! the routing generation, which moves on every change to apps and domains.

use postern_store::{App, HostRefusal};

use crate::{Edge, EdgeError};

impl Edge {
    /// Why `app` must not be served on its host, if it must not.
    pub(crate) async fn host_refusal(&self, app: &App) -> Result<Option<HostRefusal>, EdgeError> {
        let generation = self.store.routing_generation();
        if let Some(found) = self.host_refusals.get(&app.id, generation) {
            return Ok(found);
        }
        let found = self
            .store
            .host_refusal(&self.options.host_rules, &app.tenant_id, &app.external_host)
            .await?;
        if let Some(refusal) = &found {
            tracing::error!(app = %app.name, tenant = %app.tenant_id, reason = %refusal, "app not served on this host");
        }
        self.host_refusals.put(app.id.clone(), found.clone(), generation);
        Ok(found)
    }
}
