//! Periodic upkeep of on-prem components.

use postern_store::NewAuditEntry;
use serde_json::json;

use crate::Control;
use crate::error::ControlError;

/// Ends renewal grace periods (revoking the replaced certificates) and removes
/// components whose certificate has expired: an agent with an expired certificate
/// is removed from its tenant and must be registered again (PTA-7); the same holds
/// for a connector that let its certificate lapse.
pub(crate) async fn run(control: &Control) -> Result<u64, ControlError> {
    let now = control.now();
    control.store.expire_previous_certificates(now).await?;
    let expired = control.store.expired_components(now).await?;
    let mut removed = 0;
    for c in expired {
        control
            .store
            .delete_component(&c.tenant_id, &c.id, "expired", now)
            .await?;
        control
            .store
            .append_audit(
                &NewAuditEntry {
                    tenant_id: Some(c.tenant_id.clone()),
                    actor: "system".into(),
                    action: format!("{}.remove", c.kind),
                    target: format!("{}:{}", c.kind, c.id),
                    detail: json!({ "reason": "certificate expired", "name": c.name, "not_after": c.not_after.secs() }),
                },
                now,
            )
            .await?;
        tracing::warn!(kind = %c.kind, component = %c.id, "certificate expired: component removed; it must be registered again");
        removed += 1;
    }
    Ok(removed)
}
