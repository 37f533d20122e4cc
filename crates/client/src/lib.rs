//! HTTP client for the service: device-flow sign-in and the admin API.
