//! The  role: configuration, listeners, TLS and graceful shutdown, wiring the STS and admin API.
