//! Entry points for the fuzz targets in `fuzz/` (not an API): the CSR checks
//! the enrolment and renewal endpoints run on what a component sends.

use crate::csr::check_csr;
use crate::policy::KeyPolicy;

/// Runs every CSR check on `input` (PEM or DER) under the connectors' key
/// policy (the wider one) for a fixed tenant. `true` when it passes.
pub fn csr(input: &[u8]) -> bool {
    check_csr(input, "fuzz-tenant", &KeyPolicy::connectors()).is_ok()
}
