//! Test harness: starts the real service in-process on loopback with a temporary store and a controlled clock.
