//! What `postern serve` reports at scrape time besides the events its parts
//! count: the tunnels of every connector group on this instance and whether
//! each group has one, when each connector's and agent's certificate and
//! each CA expire, and how many components report each version.

use std::sync::Arc;

use postern_control::Control;
use postern_metrics::{BoxFuture, Collector, Family, names};
use postern_pki::CaKind;
use postern_store::{ComponentKind, Store, StoreError, Tenant};

/// Reads the store and the tunnel registry when scraped.
pub(crate) struct ServiceCollector {
    store: Store,
    control: Arc<Control>,
}

impl ServiceCollector {
    /// A collector over this instance's store and tunnels.
    pub(crate) fn new(store: Store, control: Arc<Control>) -> Arc<Self> {
        Arc::new(Self { store, control })
    }

    async fn collect_all(&self) -> Result<Vec<Family>, StoreError> {
        let tenants = self.store.tenants().await?;
        let mut families = self.tunnels(&tenants).await?;
        families.push(self.certificates(&tenants).await?);
        families.push(self.authorities());
        families.push(self.versions().await?);
        Ok(families)
    }

    /// Open tunnels and requests in flight per group, and each group's health
    /// (1: at least one tunnel here).
    async fn tunnels(&self, tenants: &[Tenant]) -> Result<Vec<Family>, StoreError> {
        let mut open = Family::new(names::TUNNELS, "Open tunnels of a connector group on this instance.");
        let mut busy = Family::new(
            names::TUNNEL_REQUESTS_IN_FLIGHT,
            "Requests in flight on a connector group's tunnels.",
        );
        let mut up = Family::new(
            names::CONNECTOR_GROUP_UP,
            "1 if the connector group has an open tunnel on this instance.",
        );
        for tenant in tenants {
            for group in self.store.connector_groups(&tenant.id).await? {
                let tunnels = self.control.tunnels().tunnels(&tenant.id, &group.id);
                let in_flight: usize = tunnels.iter().map(|t| t.in_flight).sum();
                let labels = vec![("tenant", tenant.id.clone()), ("group", group.id.clone())];
                open.push(labels.clone(), count(tunnels.len()));
                busy.push(labels.clone(), count(in_flight));
                up.push(labels, if tunnels.is_empty() { 0.0 } else { 1.0 });
            }
        }
        Ok(vec![open, busy, up])
    }

    /// When each connector's and agent's certificate expires.
    async fn certificates(&self, tenants: &[Tenant]) -> Result<Family, StoreError> {
        let mut expiry = Family::new(
            names::COMPONENT_CERT_EXPIRY,
            "When a connector's or agent's certificate expires (Unix seconds).",
        );
        for tenant in tenants {
            for kind in [ComponentKind::Connector, ComponentKind::Agent] {
                for c in self.store.components(&tenant.id, kind).await? {
                    let labels = vec![
                        ("tenant", tenant.id.clone()),
                        ("kind", kind.as_str().to_owned()),
                        ("component", c.id),
                    ];
                    expiry.push(labels, seconds(c.not_after.secs()));
                }
            }
        }
        Ok(expiry)
    }

    /// When each certificate authority expires.
    fn authorities(&self) -> Family {
        let mut expiry = Family::new(names::CA_EXPIRY, "When a certificate authority expires (Unix seconds).");
        for kind in CaKind::ALL {
            let not_after = self.control.authorities().get(kind).not_after();
            expiry.push(vec![("ca", kind.as_str().to_owned())], seconds(not_after.secs()));
        }
        expiry
    }

    /// Components by kind and reported version.
    async fn versions(&self) -> Result<Family, StoreError> {
        let mut components = Family::new(names::COMPONENTS, "Registered components by kind and reported version.");
        for (kind, version, n) in self.store.component_versions().await? {
            components.push(vec![("kind", kind), ("version", version)], seconds(n));
        }
        Ok(components)
    }
}

impl Collector for ServiceCollector {
    fn collect(&self) -> BoxFuture<'_, Vec<Family>> {
        Box::pin(async move {
            self.collect_all().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "metrics: the store could not be read; scrape-time series left out");
                Vec::new()
            })
        })
    }
}

/// A count as a sample value.
#[allow(clippy::cast_precision_loss)]
fn count(n: usize) -> f64 {
    n as f64
}

/// Seconds (or another integer) as a sample value.
#[allow(clippy::cast_precision_loss)]
fn seconds(n: i64) -> f64 {
    n as f64
}
