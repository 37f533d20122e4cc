//! The security token service: OpenID Connect provider, sign-in pages, MFA and smart lockout.
