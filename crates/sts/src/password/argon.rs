//! argon2id over memory the caller provides: hashing into PHC strings,
//! verifying one, telling whether a stored hash has outdated parameters, and the
//! dummy hash unknown accounts are checked against. No allocation per hash: the
//! pool ([`super::pool`]) lends each job a buffer it keeps between jobs.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::error::StsError;

/// Salt length of new hashes.
const SALT_LEN: usize = 16;
/// Output length of new hashes.
const OUTPUT_LEN: usize = 32;

/// argon2id with the installation's current parameters.
#[derive(Clone, Debug)]
pub(crate) struct Argon {
    params: Params,
}

/// What checking a password against a stored hash found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The password matches.
    pub matched: bool,
    /// The stored hash was made with other parameters than the current ones.
    pub outdated: bool,
}

impl Argon {
    /// argon2id v1.3 with `memory_kib` KiB and `iterations` passes, one lane.
    pub(crate) fn new(memory_kib: u32, iterations: u32) -> Result<Self, String> {
        let params = Params::new(memory_kib, iterations, 1, Some(OUTPUT_LEN))
            .map_err(|e| format!("argon2 parameters m={memory_kib} KiB, t={iterations}: {e}"))?;
        Ok(Self { params })
    }

    /// Memory blocks one hash needs.
    pub(crate) fn block_count(&self) -> usize {
        self.params.block_count()
    }

    /// A buffer for one hash at the current parameters (every page touched).
    #[cfg(test)]
    pub(crate) fn new_buffer(&self) -> Box<[Block]> {
        vec![Block::default(); self.block_count()].into_boxed_slice()
    }

    fn hasher(&self, params: Params, version: Version) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, version, params)
    }

    /// The PHC string of `password` under `salt` (16 random bytes).
    pub(crate) fn hash(&self, password: &[u8], salt: &[u8], memory: &mut [Block]) -> Result<String, StsError> {
        let mut out = [0u8; OUTPUT_LEN];
        self.hasher(self.params.clone(), Version::V0x13)
            .hash_password_into_with_memory(password, salt, &mut out, &mut *memory)
            .map_err(|e| StsError::internal(format!("hashing failed: {e}")))?;
        phc_string(&self.params, salt, &out)
    }

    /// Checks `password` against the PHC string `stored`, in `memory` when it is
    /// large enough for the stored parameters, else in a buffer of their size
    /// (hashes made before the parameters were lowered; they are rehashed at
    /// their next sign-in).
    pub(crate) fn verify(&self, password: &[u8], stored: &str, memory: &mut [Block]) -> Result<Checked, StsError> {
        let phc = PasswordHash::new(stored).map_err(|e| StsError::internal(format!("stored hash: {e}")))?;
        let stored_err = |e: &dyn std::fmt::Display| StsError::internal(format!("stored hash: {e}"));
        let algorithm = Algorithm::try_from(phc.algorithm.as_str()).map_err(|e| stored_err(&e))?;
        let version = Version::try_from(phc.version.unwrap_or(0x13)).map_err(|e| stored_err(&e))?;
        let params = Params::try_from(&phc).map_err(|e| stored_err(&e))?;
        let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
            return Err(StsError::internal("stored hash: no salt or output"));
        };
        let mut computed = vec![0u8; expected.len()];
        let hasher = Argon2::new(algorithm, version, params.clone());
        let mut own;
        let memory = if memory.len() >= params.block_count() {
            memory
        } else {
            own = vec![Block::default(); params.block_count()];
            own.as_mut_slice()
        };
        hasher
            .hash_password_into_with_memory(password, salt.as_ref(), &mut computed, memory)
            .map_err(|e| StsError::internal(format!("verifying failed: {e}")))?;
        let outdated = algorithm != Algorithm::Argon2id
            || version != Version::V0x13
            || params.m_cost() != self.params.m_cost()
            || params.t_cost() != self.params.t_cost()
            || params.p_cost() != self.params.p_cost()
            || expected.len() != OUTPUT_LEN;
        Ok(Checked {
            matched: postern_keyring::constant_time_eq(&computed, expected.as_bytes()),
            outdated,
        })
    }

    /// A hash with the current parameters that no password matches (random salt
    /// and output): checking against it costs exactly what a real check costs.
    pub(crate) fn dummy(&self) -> Result<String, StsError> {
        let salt = postern_keyring::random_bytes::<SALT_LEN>()?;
        let output = postern_keyring::random_bytes::<OUTPUT_LEN>()?;
        phc_string(&self.params, &salt, &output)
    }
}

/// Random salt for a new hash.
pub(crate) fn new_salt() -> Result<[u8; SALT_LEN], StsError> {
    Ok(postern_keyring::random_bytes::<SALT_LEN>()?)
}

fn phc_string(params: &Params, salt: &[u8], output: &[u8]) -> Result<String, StsError> {
    let err = |e: &dyn std::fmt::Display| StsError::internal(format!("encoding a hash: {e}"));
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| err(&e))?,
        salt: Some(Salt::new(salt).map_err(|e| err(&e))?),
        hash: Some(Output::new(output).map_err(|e| err(&e))?),
    };
    Ok(phc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier as _;

    fn small() -> Argon {
        Argon::new(64, 1).unwrap()
    }

    #[test]
    fn hashes_are_standard_phc_strings() {
        let argon = small();
        let mut memory = argon.new_buffer();
        let hash = argon.hash(b"a password", &new_salt().unwrap(), &mut memory).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        // The reference implementation agrees.
        let reference = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        assert!(reference.verify_password(b"a password", hash.as_str()).is_ok());
        assert!(reference.verify_password(b"another", hash.as_str()).is_err());
    }

    #[test]
    fn verifies_in_borrowed_memory_and_flags_outdated_hashes() {
        let argon = small();
        let mut memory = argon.new_buffer();
        let hash = argon.hash(b"pw", &new_salt().unwrap(), &mut memory).unwrap();
        let same = argon.verify(b"pw", &hash, &mut memory).unwrap();
        assert_eq!(
            same,
            Checked {
                matched: true,
                outdated: false
            }
        );
        assert!(!argon.verify(b"px", &hash, &mut memory).unwrap().matched);

        // Made with more memory than the buffer holds: checked in its own
        // buffer, and outdated.
        let bigger = Argon::new(128, 1).unwrap();
        let mut big_memory = bigger.new_buffer();
        let old = bigger.hash(b"pw", &new_salt().unwrap(), &mut big_memory).unwrap();
        assert_eq!(
            argon.verify(b"pw", &old, &mut memory).unwrap(),
            Checked {
                matched: true,
                outdated: true
            }
        );
        // Other passes: outdated too.
        let slower = Argon::new(64, 2).unwrap();
        let old = slower.hash(b"pw", &new_salt().unwrap(), &mut memory).unwrap();
        assert!(argon.verify(b"pw", &old, &mut memory).unwrap().outdated);
    }

    #[test]
    fn the_dummy_matches_nothing_and_is_current() {
        let argon = small();
        let mut memory = argon.new_buffer();
        let dummy = argon.dummy().unwrap();
        assert_ne!(dummy, argon.dummy().unwrap());
        let checked = argon.verify(b"", &dummy, &mut memory).unwrap();
        assert_eq!(
            checked,
            Checked {
                matched: false,
                outdated: false
            }
        );
    }

    #[test]
    fn broken_stored_hashes_are_errors() {
        let argon = small();
        let mut memory = argon.new_buffer();
        assert!(argon.verify(b"pw", "not a hash", &mut memory).is_err());
        assert!(
            argon
                .verify(b"pw", "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ", &mut memory)
                .is_err()
        );
        assert!(Argon::new(1, 1).is_err(), "too little memory");
    }
}
