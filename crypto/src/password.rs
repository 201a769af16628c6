//! Password hashing: Argon2id (RFC 9106) via the `argon2` crate, stored as
//! PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! ## Parameters and why
//!
//! `m = 19456 KiB (19 MiB), t = 2, p = 1`, a 16-byte random salt and a
//! 32-byte output: the minimum Argon2id configuration of the OWASP Password
//! Storage Cheat Sheet. RFC 9106 §4 recommends 2 GiB (t=1) or 64 MiB (t=3),
//! both written for a single interactive hash; a quill server verifies
//! logins for many clients on a small worker pool (DESIGN.md: never on the
//! event-loop thread), and its memory is `m × workers`. 19 MiB keeps a
//! four-worker pool under 80 MiB while costing an attacker ~19 MiB and two
//! passes per guess; on the 2-core reference VM one hash takes about
//! 15–25 ms (see docs/BENCHMARKS.md). `p = 1` because parallel lanes
//! would compete with the event loop for the same two cores.
//!
//! ## Memory
//!
//! Each thread that hashes or verifies keeps one Argon2 work area of exactly
//! `M_COST_KIB` KiB (19 MiB) and reuses it for every later run with quill's
//! parameters; it is zeroized after each use and freed when the thread ends.
//! A server's Argon2 memory is therefore `workers × 19 MiB` however many logins
//! it serves. (Allocating 19 MiB per run, as the `argon2` crate's convenience
//! API does, let glibc keep every freed work area in per-thread arenas: a
//! server's idle RSS grew to ≈ 260 MB after 20 logins.) A stored hash with
//! larger parameters (up to the caps below) gets a one-off buffer.
//!
//! Stored hashes carry their own parameters, so they can be raised later
//! without invalidating old hashes; [`verify_password`] refuses PHC strings
//! whose parameters exceed generous caps, so a corrupted or hostile
//! database row cannot make the server allocate without bound.

use std::cell::RefCell;

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::random::Random;
use crate::Error;

/// Argon2id memory cost in KiB.
pub const M_COST_KIB: u32 = 19 * 1024;
/// Argon2id passes.
pub const T_COST: u32 = 2;
/// Argon2id lanes.
pub const P_COST: u32 = 1;
/// Output (tag) length in bytes.
pub const OUTPUT_LEN: usize = 32;
/// Salt length in bytes.
pub const SALT_LEN: usize = 16;

/// The largest memory cost a stored hash may ask for (256 MiB).
pub const MAX_M_COST_KIB: u32 = 256 * 1024;
/// The most passes a stored hash may ask for.
pub const MAX_T_COST: u32 = 16;
/// The most lanes a stored hash may ask for.
pub const MAX_P_COST: u32 = 8;
/// The longest PHC string we parse.
pub const MAX_PHC_LEN: usize = 256;

/// A well-formed hash with exactly our parameters that no password matches
/// in practice (its "hash" is SHA-256("quill dummy hash")), so
/// [`dummy_verify`] costs what a real verification costs.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$cXVpbGwtZHVtbXktc2FsdA$\
                         2rUQC0YulSEJq3kF59poDWW3cmQfyjYPp73DOYaJPWc";

thread_local! {
    /// This thread's reusable Argon2 work area (see "Memory" in the module docs).
    static WORK_AREA: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs Argon2id v1.3 with `params` into `out`, in this thread's work area when the
/// parameters fit it (a one-off buffer otherwise); the memory is zeroized afterwards.
fn argon2id_into(params: Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    let blocks = params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut run = |area: &mut [Block]| {
        let ok = argon
            .hash_password_into_with_memory(password, salt, out, &mut *area)
            .is_ok();
        for block in area.iter_mut() {
            block.as_mut().zeroize();
        }
        ok
    };
    let ours = M_COST_KIB as usize;
    if blocks <= ours {
        let reused = WORK_AREA.with(|cell| {
            let mut area = cell.try_borrow_mut().ok()?;
            if area.len() != ours {
                *area = vec![Block::new(); ours];
            }
            Some(run(&mut area[..blocks]))
        });
        if let Some(ok) = reused {
            return ok;
        }
    }
    run(&mut vec![Block::new(); blocks])
}

fn our_params() -> Result<Params, Error> {
    Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN))
        .map_err(|_| Error::PasswordHash("invalid parameters"))
}

/// Hashes `password` with a fresh 16-byte salt from `rng`; returns the PHC
/// string to store.
pub fn hash_password(password: &[u8], rng: &dyn Random) -> Result<String, Error> {
    let mut salt = [0u8; SALT_LEN];
    rng.fill(&mut salt)?;
    let salt_string =
        SaltString::encode_b64(&salt).map_err(|_| Error::PasswordHash("salt encoding"))?;
    let params = our_params()?;
    let mut out = Zeroizing::new([0u8; OUTPUT_LEN]);
    let ok = argon2id_into(params.clone(), password, &salt, &mut out[..]);
    salt.zeroize();
    if !ok {
        return Err(Error::PasswordHash("hashing failed"));
    }
    let output = argon2::password_hash::Output::new(&out[..])
        .map_err(|_| Error::PasswordHash("hashing failed"))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(&params)
            .map_err(|_| Error::PasswordHash("invalid parameters"))?,
        salt: Some(salt_string.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Checks `password` against a stored PHC string. False for a wrong
/// password, a malformed string, another algorithm than Argon2id v1.3, or
/// parameters above the caps. The final comparison is constant time.
pub fn verify_password(phc: &str, password: &[u8]) -> bool {
    if phc.len() > MAX_PHC_LEN {
        return false;
    }
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    if hash.algorithm != argon2::ARGON2ID_IDENT || hash.version != Some(0x13) {
        return false;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return false;
    }
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    if !argon2id_into(params, password, salt, &mut out) {
        return false;
    }
    bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// Does the work of one verification against a dummy hash with quill's
/// parameters, for logins naming an unknown user, so they take as long as
/// a wrong password for a known one.
pub fn dummy_verify(password: &[u8]) {
    let _ = verify_password(DUMMY_PHC, password);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn hash_then_verify() {
        let rng = SeededRandom::new([1; 32]);
        let phc = hash_password(b"correct horse", &rng).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(&phc, b"correct horse"));
        assert!(!verify_password(&phc, b"correct horsf"));
        assert!(!verify_password(&phc, b""));
        // Fresh salt each time.
        let phc2 = hash_password(b"correct horse", &rng).unwrap();
        assert_ne!(phc, phc2);
        assert!(verify_password(&phc2, b"correct horse"));
    }

    #[test]
    fn malformed_or_out_of_policy_hashes_fail_closed() {
        for bad in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$cXVpbGwtZHVtbXktc2FsdA",
            // argon2i, not argon2id
            "$argon2i$v=19$m=19456,t=2,p=1$cXVpbGwtZHVtbXktc2FsdA$2rUQC0YulSEJq3kF59poDWW3cmQfyjYPp73DOYaJPWc",
            // version 0x10
            "$argon2id$v=16$m=19456,t=2,p=1$cXVpbGwtZHVtbXktc2FsdA$2rUQC0YulSEJq3kF59poDWW3cmQfyjYPp73DOYaJPWc",
            // 4 GiB of memory: refused before any allocation
            "$argon2id$v=19$m=4194304,t=2,p=1$cXVpbGwtZHVtbXktc2FsdA$2rUQC0YulSEJq3kF59poDWW3cmQfyjYPp73DOYaJPWc",
            "$argon2id$v=19$m=19456,t=1000,p=1$cXVpbGwtZHVtbXktc2FsdA$2rUQC0YulSEJq3kF59poDWW3cmQfyjYPp73DOYaJPWc",
            "$argon2id$v=19$m=19456,t=2,p=64$cXVpbGwtZHVtbXktc2FsdA$2rUQC0YulSEJq3kF59poDWW3cmQfyjYPp73DOYaJPWc",
        ] {
            assert!(!verify_password(bad, b"x"), "{bad}");
        }
        assert!(!verify_password(&"$".repeat(10_000), b"x"));
    }

    #[test]
    fn the_work_area_is_reused_and_matches_the_reference_api() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let rng = SeededRandom::new([2; 32]);
        let phc = hash_password(b"pw one", &rng).unwrap();
        // The argon2 crate's own API agrees with our work-area path both ways.
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, our_params().unwrap());
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(reference.verify_password(b"pw one", &parsed).is_ok());
        let salt = SaltString::encode_b64(&[9u8; SALT_LEN]).unwrap();
        let theirs = reference
            .hash_password(b"pw two", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password(&theirs, b"pw two"));
        assert!(!verify_password(&theirs, b"pw tw0"));
        let len = WORK_AREA.with(|a| a.borrow().len());
        assert_eq!(len, M_COST_KIB as usize, "one area of exactly our size");
        // Zeroized after use.
        assert!(WORK_AREA.with(|a| a
            .borrow()
            .iter()
            .all(|b| b.as_ref().iter().all(|&w| w == 0))));
        // Smaller parameters reuse the same area; larger ones do not grow it.
        let small = "$argon2id$v=19$m=64,t=1,p=1$cXVpbGwtZHVtbXktc2FsdA$\
                     2rUQC0YulSEJq3kF59poDWW3cmQfyjYPp73DOYaJPWc";
        assert!(!verify_password(small, b"x"));
        assert_eq!(WORK_AREA.with(|a| a.borrow().len()), M_COST_KIB as usize);
    }

    #[test]
    fn dummy_hash_has_exactly_our_cost() {
        let hash = PasswordHash::new(DUMMY_PHC).unwrap();
        assert_eq!(hash.algorithm, argon2::ARGON2ID_IDENT);
        let params = Params::try_from(&hash).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (M_COST_KIB, T_COST, P_COST)
        );
        assert_eq!(hash.hash.map(|h| h.len()), Some(OUTPUT_LEN));
        assert_eq!(hash.salt.map(|s| s.len()), Some(22)); // 16 bytes, base64
        assert!(!verify_password(DUMMY_PHC, b"password"));
        dummy_verify(b"password");
    }
}
