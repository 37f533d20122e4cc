//! Who a published app admits: the one decision both the front door (on every
//! request, behind its cache) and the authorization endpoint (before it issues a
//! code to the app's client) make, so the two can never disagree and conditional
//! access has one place to live.

use postern_store::{App, StoreError};

use crate::Sts;
use crate::error::StsError;

/// Why an app refuses a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The account is disabled.
    #[error("the user's account is disabled")]
    Disabled,
    /// No such user in the app's tenant (deleted since signing in).
    #[error("the user's account no longer exists")]
    NoSuchUser,
    /// Neither the user nor any of their groups is assigned to the app.
    #[error("the user is not assigned to this application")]
    NotAssigned,
}

impl Denial {
    /// The reason addressed to the user, to follow "You are signed in as X, but".
    pub fn to_user(self) -> &'static str {
        match self {
            Denial::Disabled => "your account is disabled",
            Denial::NoSuchUser => "your account no longer exists",
            Denial::NotAssigned => "you are not assigned to this application; ask its administrator",
        }
    }
}

/// Whether an app admits a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; the user's group names (for the backend's identity headers).
    Allowed {
        /// Group names.
        groups: Vec<String>,
    },
    /// Refused, and why.
    Denied(Denial),
}

impl Sts {
    /// Whether `app` admits `user_id` now: the user exists in the app's tenant, is
    /// enabled, and is assigned to the app directly or through a group. Not
    /// cached: callers that ask on every request keep their own cache around it.
    pub async fn app_admits(&self, app: &App, user_id: &str) -> Result<Admission, StsError> {
        let user = match self.store.user(&app.tenant_id, user_id).await {
            Ok(u) => u,
            Err(StoreError::NotFound) => return Ok(Admission::Denied(Denial::NoSuchUser)),
            Err(e) => return Err(e.into()),
        };
        if !user.enabled {
            return Ok(Admission::Denied(Denial::Disabled));
        }
        if !self.store.user_assigned_to_app(&app.id, &user.id).await? {
            return Ok(Admission::Denied(Denial::NotAssigned));
        }
        let groups = self
            .store
            .user_groups(&app.tenant_id, &user.id)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect();
        Ok(Admission::Allowed { groups })
    }
}
