-- Single-use bearer credentials that are signed rather than stored (a device-flow
-- registration approval): the token ID is recorded when the credential is used,
-- so a second use is refused; rows go once the credential has expired anyway.
CREATE TABLE spent_credentials (
    jti         TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
