//! Entry points for the fuzz targets in `fuzz/` (not an API): the checks every
//! bearer token, ID token, identity assertion and queue credential goes through
//! before its claims are trusted, with a fixed public key.

use std::sync::LazyLock;

use jsonwebtoken::DecodingKey;

use crate::relying_party::{ASSERTION_TYP, AssertionClaims};
use crate::tokens::{
    ACCESS_TOKEN_TYP, AccessClaims, ID_TOKEN_TYP, IdClaims, QUEUE_CREDENTIAL_TYP, QueueClaims, decode_signed,
    signed_header_kid, unverified_issuer,
};

/// The `kid` of the fuzzing key; the seed corpus holds tokens it signed.
pub const FUZZ_KID: &str = "fuzz";

/// Modulus (base64url) of the fuzzing key, an RSA-2048 key made for the seeds
/// (its private half was not kept).
const FUZZ_KEY_N: &str = "vA7-vIZ_43Cg9UJ5SHi2zeHP42n_lvczc4zjDW7yew6mxEbLlhWr-i3BiFvW6Iu5c77nXrXUKfagoqS8-L7DFPfXPxKf3J5TQY1PUES7UKf5NsF9p3IDvj2w4RXVJZp1BON3JiS9ee3CJVajTw5eMv4uvhOLKquMCznEBvhp9kXlf-E6LnLWwyS_mswixYmD63nbIP11XqY8SGaq16eei085EDEmvzfS3qptp6hDES3dEzbk71ug7dMcbtYUrqDQ3lUT54zT5pJIOdIpD596UUP4GPA_dmLvk6gCCf9jqPj9AWyM7enGf1Jx5A6ogoGL8kNpoVjEXmlvljXChq3mMQ";

static FUZZ_KEY: LazyLock<Option<DecodingKey>> =
    LazyLock::new(|| DecodingKey::from_rsa_components(FUZZ_KEY_N, "AQAB").ok());

/// Runs `token` through the verifier as each kind of token the service
/// accepts: header (`alg`, `typ`, `kid`), then, when the `kid` is the
/// fuzzing key's, signature and claims. Also reads its issuer unverified, as
/// the admin API does to pick a tenant. Returns how many kinds verified.
pub fn verify_token(token: &str) -> usize {
    let _ = unverified_issuer(token);
    let Some(key) = FUZZ_KEY.as_ref() else {
        return 0;
    };
    let verified = |typ: &str, decode: &dyn Fn() -> bool| {
        signed_header_kid(token, typ).is_ok_and(|kid| kid == FUZZ_KID && decode())
    };
    [
        verified(ACCESS_TOKEN_TYP, &|| decode_signed::<AccessClaims>(token, key).is_ok()),
        verified(ID_TOKEN_TYP, &|| decode_signed::<IdClaims>(token, key).is_ok()),
        verified(ASSERTION_TYP, &|| decode_signed::<AssertionClaims>(token, key).is_ok()),
        verified(QUEUE_CREDENTIAL_TYP, &|| {
            decode_signed::<QueueClaims>(token, key).is_ok()
        }),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// Reads cookie `name` from `headers` as the sign-in pages do.
pub fn read_cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    crate::cookies::get(headers, name)
}
