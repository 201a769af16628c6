//! Host keys: Ed25519 today (signing by `ed25519-dalek`, verifying by `ring`:
//! each measured the faster one, docs/BENCHMARKS.md "Implementations compared
//! (issue 17)"), shaped for a hybrid Ed25519 + ML-DSA-65 algorithm later.
//!
//! Every key and signature carries its [`Algorithm`], and the wire form is
//! self-describing so a new algorithm is one more enum variant:
//!
//! ```text
//! PublicKey / Signature wire form = algorithm id (u16) || length (u16) || bytes
//! public key line                 = "quill-ed25519 " base64(wire form) [" " comment]
//! fingerprint                     = "SHA256:" base64-unpadded(SHA-256(wire form))
//! ```
//!
//! Key files: the private key at `PATH` (created with mode 0600, never
//! chmod-ed afterwards) and the public key line at `PATH.pub`.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use base64ct::{Base64, Base64Unpadded, Encoding};
use ed25519_dalek::Signer;
use ring::signature;
use zeroize::{Zeroize, Zeroizing};

use crate::random::Random;
use crate::Error;

/// A host key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
}

impl Algorithm {
    /// The algorithm's 16-bit identifier in wire forms.
    pub fn id(self) -> u16 {
        match self {
            Algorithm::Ed25519 => 0x0001,
        }
    }

    /// The algorithm for an identifier.
    pub fn from_id(id: u16) -> Result<Algorithm, Error> {
        match id {
            0x0001 => Ok(Algorithm::Ed25519),
            other => Err(Error::UnknownAlgorithm(other)),
        }
    }

    /// The name used in public key lines, e.g. `quill-ed25519`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "quill-ed25519",
        }
    }

    /// The algorithm for a public-key-line name.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "quill-ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }

    /// Raw public key length.
    pub fn public_key_len(self) -> usize {
        match self {
            Algorithm::Ed25519 => 32,
        }
    }

    /// Raw signature length.
    pub fn signature_len(self) -> usize {
        match self {
            Algorithm::Ed25519 => 64,
        }
    }

    /// Private seed length.
    pub fn seed_len(self) -> usize {
        match self {
            Algorithm::Ed25519 => 32,
        }
    }
}

fn frame(alg: Algorithm, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&alg.id().to_be_bytes());
    // Every algorithm's lengths fit in a u16 (checked by the length tables).
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Parses `id || len || bytes` with no trailing data, checking `len` against
/// the algorithm's expected length.
fn unframe<'a>(
    input: &'a [u8],
    what: &'static str,
    expected_len: fn(Algorithm) -> usize,
) -> Result<(Algorithm, &'a [u8]), Error> {
    if input.len() < 4 {
        return Err(Error::Malformed(what));
    }
    let alg = Algorithm::from_id(u16::from_be_bytes([input[0], input[1]]))?;
    let len = usize::from(u16::from_be_bytes([input[2], input[3]]));
    let body = &input[4..];
    if len != expected_len(alg) || body.len() != len {
        return Err(Error::Malformed(what));
    }
    Ok((alg, body))
}

/// A host public key: algorithm plus raw key bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    algorithm: Algorithm,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({} {})",
            self.algorithm.name(),
            self.fingerprint()
        )
    }
}

/// What a key and a signature share: an algorithm plus raw bytes whose length the
/// algorithm fixes, with the wire form `algorithm id (u16) || length (u16) || bytes`.
/// `$what` names the value in errors and docs; `$len` is its length per algorithm.
macro_rules! algorithm_and_bytes {
    ($ty:ident, $what:literal, $len:path) => {
        impl $ty {
            #[doc = concat!("A ", $what, " from its algorithm and raw bytes (length checked).")]
            pub fn from_raw(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, Error> {
                Error::check_len($what, $len(algorithm), bytes)?;
                Ok($ty {
                    algorithm,
                    bytes: bytes.to_vec(),
                })
            }

            #[doc = concat!("The ", $what, "'s algorithm.")]
            pub fn algorithm(&self) -> Algorithm {
                self.algorithm
            }

            #[doc = concat!("Wire form: `algorithm id (u16) || length (u16) || ", $what, "`.")]
            pub fn to_bytes(&self) -> Vec<u8> {
                frame(self.algorithm, &self.bytes)
            }

            /// Parses the wire form; rejects unknown algorithms, wrong lengths and
            /// trailing bytes.
            pub fn from_bytes(input: &[u8]) -> Result<Self, Error> {
                let (algorithm, body) = unframe(input, $what, $len)?;
                Self::from_raw(algorithm, body)
            }
        }
    };
}

algorithm_and_bytes!(PublicKey, "public key", Algorithm::public_key_len);
algorithm_and_bytes!(Signature, "signature", Algorithm::signature_len);

impl PublicKey {
    /// The raw key bytes (32 bytes for Ed25519).
    pub fn key_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Verifies `sig` over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), Error> {
        if sig.algorithm != self.algorithm {
            return Err(Error::AlgorithmMismatch);
        }
        match self.algorithm {
            Algorithm::Ed25519 => {
                signature::UnparsedPublicKey::new(&signature::ED25519, &self.bytes)
                    .verify(msg, &sig.bytes)
                    .map_err(|_| Error::BadSignature)
            }
        }
    }

    /// The short human fingerprint, like SSH's:
    /// `"SHA256:" + base64 without padding of SHA-256(wire form)`.
    pub fn fingerprint(&self) -> String {
        let digest = crate::schedule::sha256(&self.to_bytes());
        format!("SHA256:{}", Base64Unpadded::encode_string(&digest))
    }

    /// The OpenSSH-like public key line: `quill-ed25519 BASE64 [comment]`,
    /// where BASE64 is the padded base64 of the wire form.
    pub fn to_openssh_line(&self, comment: &str) -> String {
        let b64 = Base64::encode_string(&self.to_bytes());
        let comment = comment.trim();
        if comment.is_empty() {
            format!("{} {}", self.algorithm.name(), b64)
        } else {
            format!("{} {} {}", self.algorithm.name(), b64, comment)
        }
    }

    /// Parses a public key line back into the key and its comment (empty if
    /// none). The name must match the algorithm inside the wire form.
    pub fn from_openssh_line(line: &str) -> Result<(PublicKey, String), Error> {
        const MAX_LINE: usize = 8192;
        if line.len() > MAX_LINE {
            return Err(Error::Malformed("public key line"));
        }
        let line = line.trim();
        let mut parts = line.splitn(3, char::is_whitespace);
        let name = parts.next().unwrap_or("");
        let b64 = parts.next().unwrap_or("");
        let comment = parts.next().unwrap_or("").trim().to_string();
        let algorithm = Algorithm::from_name(name).ok_or(Error::Malformed("public key line"))?;
        let wire = Base64::decode_vec(b64).map_err(|_| Error::Malformed("public key line"))?;
        let key = PublicKey::from_bytes(&wire)?;
        if key.algorithm != algorithm {
            return Err(Error::AlgorithmMismatch);
        }
        Ok((key, comment))
    }
}

/// A signature: algorithm plus raw signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    algorithm: Algorithm,
    bytes: Vec<u8>,
}

impl Signature {
    /// The raw signature bytes (64 bytes for Ed25519).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

enum Inner {
    /// The seed and its public key; zeroized on drop by ed25519-dalek.
    Ed25519(ed25519_dalek::SigningKey),
}

/// A host key pair. The private seed is kept (zeroized on drop) so the key
/// can be written to a file.
pub struct HostKeyPair {
    algorithm: Algorithm,
    seed: Zeroizing<Vec<u8>>,
    inner: Inner,
}

impl std::fmt::Debug for HostKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKeyPair({:?})", self.public())
    }
}

const PEM_BEGIN: &str = "-----BEGIN QUILL PRIVATE KEY-----";
const PEM_END: &str = "-----END QUILL PRIVATE KEY-----";
/// HKDF salt of [`HostKeyPair::derive_secret`].
const DERIVE_SALT: &[u8] = b"quill derived secret v1";
/// Key files are tiny; never read more than this.
const MAX_KEY_FILE: u64 = 16 * 1024;

impl HostKeyPair {
    /// Generates a key of the default algorithm (Ed25519) from `rng`.
    pub fn generate(rng: &dyn Random) -> Result<Self, Error> {
        Self::generate_with(Algorithm::Ed25519, rng)
    }

    /// Generates a key of `algorithm` from `rng`.
    pub fn generate_with(algorithm: Algorithm, rng: &dyn Random) -> Result<Self, Error> {
        let mut seed = Zeroizing::new(vec![0u8; algorithm.seed_len()]);
        rng.fill(&mut seed)?;
        Self::from_seed_with(algorithm, &seed)
    }

    /// An Ed25519 key from its 32-byte seed (RFC 8032 §5.1.5 "private key").
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, Error> {
        Self::from_seed_with(Algorithm::Ed25519, seed)
    }

    /// A key of `algorithm` from its seed.
    pub fn from_seed_with(algorithm: Algorithm, seed: &[u8]) -> Result<Self, Error> {
        Error::check_len("private key seed", algorithm.seed_len(), seed)?;
        let inner = match algorithm {
            Algorithm::Ed25519 => {
                let seed: &[u8; 32] = seed
                    .try_into()
                    .map_err(|_| Error::Malformed("Ed25519 seed"))?;
                Inner::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
            }
        };
        Ok(HostKeyPair {
            algorithm,
            seed: Zeroizing::new(seed.to_vec()),
            inner,
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        match &self.inner {
            Inner::Ed25519(kp) => Signature {
                algorithm: Algorithm::Ed25519,
                bytes: kp.sign(msg).to_bytes().to_vec(),
            },
        }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        match &self.inner {
            Inner::Ed25519(kp) => PublicKey {
                algorithm: Algorithm::Ed25519,
                bytes: kp.verifying_key().as_bytes().to_vec(),
            },
        }
    }

    /// A 32-byte secret derived from the private key for `label`, for keys a server
    /// must keep across restarts without another file (the stateless-reset key):
    /// `HKDF-SHA256(salt = "quill derived secret v1", IKM = algorithm id || seed,
    /// info = label)`. Different labels give independent secrets, and none of them
    /// reveals anything about the signing key (RFC 5869 §3.3: HKDF outputs are
    /// independent of each other and of the input keying material).
    pub fn derive_secret(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, DERIVE_SALT);
        let mut ikm = Zeroizing::new(Vec::with_capacity(2 + self.seed.len()));
        ikm.extend_from_slice(&self.algorithm.id().to_be_bytes());
        ikm.extend_from_slice(&self.seed);
        let prk = salt.extract(&ikm);
        let info = [label];
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(&info, ring::hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    fn pub_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".pub");
        PathBuf::from(p)
    }

    /// Writes the private key to `path` (a new file, mode 0600 from its creation;
    /// an existing file is an error, never overwritten) and the public key line to
    /// `path.pub` (mode 0644, replaced if present).
    ///
    /// All or nothing: both files are first written in full and synced under temporary
    /// names in the same directory, then the private key is linked to `path` (which
    /// fails if `path` exists) and the public key renamed over `path.pub`, and the
    /// directory is synced. A failure on the way (disk full, interrupted write) removes
    /// what was written, so no empty or truncated key is left behind and running the
    /// same command again works.
    pub fn write_to(&self, path: &Path) -> Result<(), Error> {
        let body = Zeroizing::new(Base64::encode_string(&frame(self.algorithm, &self.seed)));
        let mut text = Zeroizing::new(String::with_capacity(body.len() + 80));
        text.push_str(PEM_BEGIN);
        text.push('\n');
        text.push_str(&body);
        text.push('\n');
        text.push_str(PEM_END);
        text.push('\n');
        let public = self.public().to_openssh_line("") + "\n";

        // Checked first for the clearer error; the link below is what guarantees it.
        if path.symlink_metadata().is_ok() {
            return Err(Error::io(path, &std::io::ErrorKind::AlreadyExists.into()));
        }
        let pub_path = Self::pub_path(path);
        let private_tmp = TempFile::write(path, text.as_bytes(), 0o600)?;
        let public_tmp = TempFile::write(&pub_path, public.as_bytes(), 0o644)?;
        // A hard link never replaces an existing file, unlike rename.
        std::fs::hard_link(&private_tmp.path, path).map_err(|e| Error::io(path, &e))?;
        if let Err(e) = std::fs::rename(&public_tmp.path, &pub_path) {
            let _ = std::fs::remove_file(path);
            return Err(Error::io(&pub_path, &e));
        }
        public_tmp.keep();
        drop(private_tmp);
        // Both files are complete and in place; a directory that cannot be synced (some
        // file systems refuse) costs durability across a crash, not correctness.
        let _ = sync_dir(path);
        Ok(())
    }

    /// Reads a private key file written by [`write_to`](Self::write_to).
    ///
    /// Refuses a file whose permissions are wider than 0600 (any group or
    /// other bit, or owner execute), with an error naming the file and the
    /// `chmod 600` that fixes it.
    ///
    /// A directory, or a public key file (`PATH.pub`), is refused with
    /// [`Error::NotAPrivateKey`] saying so, before the permissions are looked at.
    pub fn read_from(path: &Path) -> Result<Self, Error> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
        let meta = f.metadata().map_err(|e| Error::io(path, &e))?;
        if meta.is_dir() {
            return Err(Error::NotAPrivateKey {
                path: path.to_path_buf(),
                why: "is a directory; pass the private key file in it (written by `quill keygen -o PATH`)",
            });
        }
        let mut head = [0u8; 32];
        let n = (&f).take(head.len() as u64).read(&mut head).unwrap_or(0);
        if is_public_key_line(&head[..n]) {
            return Err(Error::NotAPrivateKey {
                path: path.to_path_buf(),
                why: "is a public key; pass the private key file (the same path without .pub)",
            });
        }
        let mut f = f;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::io(path, &e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o177 != 0 {
                return Err(Error::InsecurePermissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let mut text = Zeroizing::new(String::new());
        f.take(MAX_KEY_FILE)
            .read_to_string(&mut text)
            .map_err(|e| Error::io(path, &e))?;
        Self::parse_private(&text)
    }

    fn parse_private(text: &str) -> Result<Self, Error> {
        const WHAT: &str = "private key file";
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(PEM_BEGIN) {
            return Err(Error::Malformed(WHAT));
        }
        let mut body = Zeroizing::new(String::new());
        let mut ended = false;
        for line in lines.by_ref() {
            if line == PEM_END {
                ended = true;
                break;
            }
            body.push_str(line);
        }
        if !ended || lines.next().is_some() {
            return Err(Error::Malformed(WHAT));
        }
        let mut wire = Base64::decode_vec(&body).map_err(|_| Error::Malformed(WHAT))?;
        let result = unframe(&wire, WHAT, Algorithm::seed_len)
            .and_then(|(alg, seed)| Self::from_seed_with(alg, seed));
        wire.zeroize();
        result
    }
}

/// Whether a file starts like a public key line (`quill-ed25519 BASE64`).
fn is_public_key_line(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let name = text
        .trim_start()
        .split(char::is_whitespace)
        .next()
        .unwrap_or("");
    text.trim_start().len() > name.len() && Algorithm::from_name(name).is_some()
}

/// A file written in full under a temporary name beside its destination; removed
/// when dropped unless [`TempFile::keep`] was called (it was renamed into place).
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Creates `.NAME.tmp-PID-N` beside `dest` (new file, `mode` from creation),
    /// writes `data` and syncs it.
    fn write(dest: &Path, data: &[u8], mode: u32) -> Result<TempFile, Error> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let mut attempt = 0;
        let (file, tmp) = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = dest.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()));
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(mode);
            }
            #[cfg(not(unix))]
            let _ = mode;
            match opts.open(&tmp) {
                Ok(f) => break (f, tmp),
                // A stale name from an earlier crash with the same pid: try the next.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1
                }
                Err(e) => return Err(Error::io(dest, &e)),
            }
        };
        let guard = TempFile {
            path: tmp,
            keep: false,
        };
        let mut file = file;
        file.write_all(data)
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(dest, &e))?;
        Ok(guard)
    }

    /// The file was renamed into place: do not remove it.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Syncs the directory holding `path`, so that a new name in it survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn derived_secrets_are_stable_per_key_and_label() {
        let a = HostKeyPair::from_seed(&[1; 32]).unwrap();
        let a2 = HostKeyPair::from_seed(&[1; 32]).unwrap();
        let b = HostKeyPair::from_seed(&[2; 32]).unwrap();
        let x = a.derive_secret(b"x");
        assert_eq!(*x, *a2.derive_secret(b"x"), "same key, same label");
        assert_ne!(*x, *a.derive_secret(b"y"), "labels separate");
        assert_ne!(*x, *b.derive_secret(b"x"), "keys separate");
        assert_ne!(&x[..], &[1u8; 32][..], "not the seed");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let mut d = std::env::temp_dir();
        d.push(format!("quill-crypto-{}-{}", name, std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A fresh temporary directory `name` holding the key of `seed`, written as
    /// `key_name`; returns the directory and the private key's path.
    fn key_file(name: &str, key_name: &str, seed: u8) -> (PathBuf, PathBuf) {
        let dir = temp_dir(name);
        let path = dir.join(key_name);
        HostKeyPair::from_seed(&[seed; 32])
            .unwrap()
            .write_to(&path)
            .unwrap();
        (dir, path)
    }

    #[test]
    fn sign_verify_and_reject() {
        let rng = SeededRandom::new([1; 32]);
        let k = HostKeyPair::generate(&rng).unwrap();
        let pk = k.public();
        let sig = k.sign(b"transcript hash");
        assert_eq!(pk.verify(b"transcript hash", &sig), Ok(()));
        assert_eq!(
            pk.verify(b"transcript hasH", &sig),
            Err(Error::BadSignature)
        );
        let mut bad = sig.clone();
        bad.bytes[10] ^= 1;
        assert_eq!(
            pk.verify(b"transcript hash", &bad),
            Err(Error::BadSignature)
        );
        let other = HostKeyPair::generate(&rng).unwrap().public();
        assert_eq!(
            other.verify(b"transcript hash", &sig),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn wire_forms_round_trip_and_reject_garbage() {
        let k = HostKeyPair::from_seed(&[7; 32]).unwrap();
        let pk = k.public();
        let wire = pk.to_bytes();
        assert_eq!(&wire[..4], &[0, 1, 0, 32]);
        assert_eq!(PublicKey::from_bytes(&wire).unwrap(), pk);
        let sig = k.sign(b"m");
        assert_eq!(Signature::from_bytes(&sig.to_bytes()).unwrap(), sig);

        for n in 0..wire.len() {
            assert!(PublicKey::from_bytes(&wire[..n]).is_err());
        }
        let mut long = wire.clone();
        long.push(0);
        assert!(PublicKey::from_bytes(&long).is_err());
        let mut unknown = wire.clone();
        unknown[1] = 0x99;
        assert_eq!(
            PublicKey::from_bytes(&unknown),
            Err(Error::UnknownAlgorithm(0x0099))
        );
        let mut wrong_len = wire.clone();
        wrong_len[3] = 31;
        assert!(PublicKey::from_bytes(&wrong_len).is_err());
        assert!(Signature::from_bytes(&sig.to_bytes()[..67]).is_err());
        assert!(Signature::from_bytes(&wire).is_err());
    }

    #[test]
    fn fingerprint_is_sha256_base64_of_wire_form() {
        let pk = HostKeyPair::from_seed(&[7; 32]).unwrap().public();
        let fp = pk.fingerprint();
        let expected = Base64Unpadded::encode_string(&crate::schedule::sha256(&pk.to_bytes()));
        assert_eq!(fp, format!("SHA256:{expected}"));
        assert_eq!(fp.len(), 7 + 43);
        assert!(!fp.contains('='));
    }

    #[test]
    fn public_key_line_round_trips() {
        let pk = HostKeyPair::from_seed(&[8; 32]).unwrap().public();
        let line = pk.to_openssh_line("server.example");
        assert!(line.starts_with("quill-ed25519 AAEAI"), "{line}");
        let (back, comment) = PublicKey::from_openssh_line(&line).unwrap();
        assert_eq!(back, pk);
        assert_eq!(comment, "server.example");
        let (back, comment) = PublicKey::from_openssh_line(&pk.to_openssh_line("")).unwrap();
        assert_eq!(back, pk);
        assert_eq!(comment, "");
        for bad in [
            "",
            "quill-ed25519",
            "ssh-ed25519 AAAA",
            "quill-ed25519 !!!!",
            "quill-ed25519 AAEAIA==",
        ] {
            assert!(PublicKey::from_openssh_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_files_round_trip_with_0600() {
        let dir = temp_dir("files");
        let path = dir.join("host_key");
        let k = HostKeyPair::generate(&SeededRandom::new([4; 32])).unwrap();
        k.write_to(&path).unwrap();

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let pub_line = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let (pk, _) = PublicKey::from_openssh_line(&pub_line).unwrap();
        assert_eq!(pk, k.public());

        // Nothing but the two key files: the temporary names are gone.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["host_key", "host_key.pub"]);

        let back = HostKeyPair::read_from(&path).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(back.sign(b"x"), k.sign(b"x"));

        // Never overwrites an existing private key.
        let err = k.write_to(&path).unwrap_err();
        assert!(matches!(
            err,
            Error::Io {
                kind: std::io::ErrorKind::AlreadyExists,
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn too_wide_permissions_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, path) = key_file("perms", "host_key", 5);
        for mode in [0o644, 0o640, 0o604, 0o700, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = HostKeyPair::read_from(&path).unwrap_err();
            assert!(
                matches!(err, Error::InsecurePermissions { .. }),
                "{mode:o}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(HostKeyPair::read_from(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn public_keys_and_directories_are_not_private_keys() {
        let (dir, path) = key_file("notpriv", "host_key", 6);
        let mut public = path.clone().into_os_string();
        public.push(".pub");
        for (given, want) in [
            (PathBuf::from(public), "is a public key"),
            (dir.clone(), "is a directory"),
        ] {
            let err = HostKeyPair::read_from(&given).unwrap_err();
            assert!(matches!(err, Error::NotAPrivateKey { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(want) && !msg.contains("chmod"), "{msg}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A key file as `quill keygen` wrote it before signing moved from ring to
    /// ed25519-dalek (issue 17): the RFC 8032 §7.1 TEST 1 seed. It must load and
    /// give that test's public key and signature.
    #[test]
    fn key_file_from_before_the_switch_loads() {
        let dir = temp_dir("oldfile");
        let path = dir.join("host_key");
        let text = "-----BEGIN QUILL PRIVATE KEY-----\n\
                    AAEAIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                    -----END QUILL PRIVATE KEY-----\n";
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
        let key = HostKeyPair::read_from(&path).unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(key.public().key_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex(key.sign(b"").as_bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Keys and signatures are byte for byte those of ring's Ed25519, which
        /// signed before issue 17, and ring verifies them.
        #[test]
        fn signing_matches_ring(
            seed in proptest::prelude::any::<[u8; 32]>(),
            msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            use ring::signature::KeyPair;
            let ring_key = signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
            let key = HostKeyPair::from_seed(&seed).unwrap();
            let public = key.public();
            proptest::prop_assert_eq!(public.key_bytes(), ring_key.public_key().as_ref());
            let sig = key.sign(&msg);
            let ring_sig = ring_key.sign(&msg);
            proptest::prop_assert_eq!(sig.as_bytes(), ring_sig.as_ref());
            proptest::prop_assert_eq!(public.verify(&msg, &sig), Ok(()));
        }
    }

    #[test]
    fn malformed_private_files_are_errors() {
        let good = {
            let (dir, path) = key_file("malformed", "k", 6);
            let s = std::fs::read_to_string(&path).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            s
        };
        assert!(HostKeyPair::parse_private(&good).is_ok());
        for bad in [
            String::new(),
            good.replace("BEGIN", "BEGIN X"),
            good.replace("-----END QUILL PRIVATE KEY-----\n", ""),
            format!("{good}trailing"),
            good.replace('A', "*"),
            format!("{PEM_BEGIN}\nAAEAIA==\n{PEM_END}\n"),
        ] {
            assert!(HostKeyPair::parse_private(&bad).is_err(), "{bad}");
        }
        let missing = HostKeyPair::read_from(Path::new("/nonexistent/quill/key")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
    }
}
