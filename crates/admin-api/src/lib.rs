//! The administration REST API under /api/v1, authorized by STS-issued bearer tokens.
