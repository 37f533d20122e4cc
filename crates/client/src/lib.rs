//! HTTP client for the service: device-flow sign-in and the admin API.
//!
//! - [`PublicClient`]: a public OAuth client of one tenant's issuer: the device
//!   authorization grant (RFC 8628), refresh and revocation. Generic over
//!   server, tenant, client ID and scope, for `postern admin login` and the
//!   registration of connectors and agents alike.
//! - [`AdminClient`]: typed calls of the admin API with a bearer token.
//! - [`CredentialFile`]: the command line's stored sign-in, refreshed when it
//!   expires.
//!
//! Every request has a timeout; tokens are [`SecretString`]s, masked in
//! `Debug` output.
#![warn(missing_docs)]

mod admin;
mod credentials;
mod device;
mod error;
mod http;
mod oauth;

pub use admin::{AdminClient, RELEASE_CHUNK};
pub use credentials::{CredentialFile, Credentials};
pub use device::{DEFAULT_MAX_WAIT, DeviceAuthorization, GRANT_DEVICE_CODE};
pub use error::ClientError;
pub use http::DEFAULT_TIMEOUT;
pub use oauth::{Issuer, PublicClient, TokenSet};
pub use postern_admin_wire as wire;
pub use postern_keyring::SecretString;
