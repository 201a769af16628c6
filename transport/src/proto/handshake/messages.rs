//! Handshake messages carried in CRYPTO frames (docs/SPEC.md §4).
//!
//! Every message is framed like TLS 1.3: `type (u8) || length (u24) || body`. The
//! transcript hash covers the framed bytes of every message in the order they were
//! sent, so the framing itself is authenticated.
//!
//! Decoding works on a complete message (the reassembly layer delivers whole ones) and
//! never panics: every length is checked against what is present.

use zeroize::Zeroizing;

use crate::wire::codec::Reader;
use crate::wire::DecodeError;

/// Largest handshake message body quill accepts (the ClientHello with its 1216-byte key
/// share and transport parameters is the largest, well under this).
pub const MAX_MESSAGE_LEN: usize = 8192;

/// Message type codes.
pub mod ty {
    /// ClientHello (Initial).
    pub const CLIENT_HELLO: u8 = 1;
    /// ServerHello (Initial).
    pub const SERVER_HELLO: u8 = 2;
    /// EncryptedExtensions (Handshake).
    pub const ENCRYPTED_EXTENSIONS: u8 = 8;
    /// HostKey (Handshake).
    pub const HOST_KEY: u8 = 11;
    /// HostKeyVerify (Handshake).
    pub const HOST_KEY_VERIFY: u8 = 15;
    /// Finished (Handshake, both directions).
    pub const FINISHED: u8 = 20;
    /// Login (Handshake, client to server).
    pub const LOGIN: u8 = 30;
    /// LoginAccepted (1-RTT, server to client).
    pub const LOGIN_ACCEPTED: u8 = 31;
}

/// Login methods a server offers, as bits in EncryptedExtensions.
pub mod methods {
    /// Password login.
    pub const PASSWORD: u8 = 0x01;
    /// Public-key login.
    pub const PUBLICKEY: u8 = 0x02;
    /// Open registration is allowed.
    pub const REGISTER: u8 = 0x04;
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The quill version the client speaks.
    pub version: u32,
    /// 32 random bytes.
    pub random: [u8; 32],
    /// AEAD suites offered, most preferred first (codepoints).
    pub suites: Vec<u16>,
    /// Hybrid key share: ML-KEM-768 encapsulation key || X25519 public key.
    pub key_share: Vec<u8>,
    /// Encoded transport parameters.
    pub transport_params: Vec<u8>,
    /// Optional server name (may be empty).
    pub server_name: Vec<u8>,
}

/// The server's answer in the Initial space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// 32 random bytes.
    pub random: [u8; 32],
    /// The chosen AEAD suite (codepoint).
    pub suite: u16,
    /// Hybrid key share: ML-KEM-768 ciphertext || X25519 public key.
    pub key_share: Vec<u8>,
}

/// Server parameters sent under handshake keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedExtensions {
    /// Encoded transport parameters.
    pub transport_params: Vec<u8>,
    /// Login methods offered (bits of [`methods`]).
    pub login_methods: u8,
}

/// The client's login request (docs/SPEC.md §4.7).
#[derive(Clone, PartialEq, Eq)]
pub enum LoginMessage {
    /// `password(user, password)`.
    Password {
        /// Account name.
        user: String,
        /// The password (zeroized on drop).
        password: Zeroizing<Vec<u8>>,
    },
    /// `publickey(user, key, signature over the transcript hash)`.
    PublicKey {
        /// Account name.
        user: String,
        /// Public key in its wire form.
        key: Vec<u8>,
        /// Signature in its wire form.
        signature: Vec<u8>,
    },
    /// `register(user, password, optional key)`.
    Register {
        /// Requested account name.
        user: String,
        /// The password (zeroized on drop).
        password: Zeroizing<Vec<u8>>,
        /// Optional public key and its signature over the transcript hash.
        key: Option<(Vec<u8>, Vec<u8>)>,
    },
}

impl std::fmt::Debug for LoginMessage {
    // Passwords never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginMessage::Password { user, .. } => {
                write!(f, "Password {{ user: {user:?}, password: <redacted> }}")
            }
            LoginMessage::PublicKey { user, .. } => write!(f, "PublicKey {{ user: {user:?} }}"),
            LoginMessage::Register { user, key, .. } => write!(
                f,
                "Register {{ user: {user:?}, password: <redacted>, key: {} }}",
                key.is_some()
            ),
        }
    }
}

impl LoginMessage {
    /// The account name the message is about.
    pub fn user(&self) -> &str {
        match self {
            LoginMessage::Password { user, .. }
            | LoginMessage::PublicKey { user, .. }
            | LoginMessage::Register { user, .. } => user,
        }
    }
}

/// One decoded handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`ClientHello`].
    ClientHello(ClientHello),
    /// See [`ServerHello`].
    ServerHello(ServerHello),
    /// See [`EncryptedExtensions`].
    EncryptedExtensions(EncryptedExtensions),
    /// The server's host public key (wire form).
    HostKey(Vec<u8>),
    /// The host key's signature over the transcript hash (wire form).
    HostKeyVerify(Vec<u8>),
    /// A Finished MAC.
    Finished([u8; 32]),
    /// The client's login request.
    Login(LoginMessage),
    /// Login accepted: the account name as the server knows it, and a banner.
    LoginAccepted {
        /// Canonical account name.
        account: String,
        /// Free-form message for the user (may be empty).
        message: String,
    },
}

const LOGIN_PASSWORD: u8 = 1;
const LOGIN_PUBLICKEY: u8 = 2;
const LOGIN_REGISTER: u8 = 3;

impl Message {
    /// The message type code.
    pub fn ty(&self) -> u8 {
        match self {
            Message::ClientHello(_) => ty::CLIENT_HELLO,
            Message::ServerHello(_) => ty::SERVER_HELLO,
            Message::EncryptedExtensions(_) => ty::ENCRYPTED_EXTENSIONS,
            Message::HostKey(_) => ty::HOST_KEY,
            Message::HostKeyVerify(_) => ty::HOST_KEY_VERIFY,
            Message::Finished(_) => ty::FINISHED,
            Message::Login(_) => ty::LOGIN,
            Message::LoginAccepted { .. } => ty::LOGIN_ACCEPTED,
        }
    }

    /// Appends the framed message (`type || u24 length || body`) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[self.ty(), 0, 0, 0]);
        let body_start = out.len();
        match self {
            Message::ClientHello(ch) => {
                out.extend_from_slice(&ch.version.to_be_bytes());
                out.extend_from_slice(&ch.random);
                out.push(ch.suites.len() as u8);
                for s in &ch.suites {
                    out.extend_from_slice(&s.to_be_bytes());
                }
                put16(out, &ch.key_share);
                put16(out, &ch.transport_params);
                put8(out, &ch.server_name);
            }
            Message::ServerHello(sh) => {
                out.extend_from_slice(&sh.random);
                out.extend_from_slice(&sh.suite.to_be_bytes());
                put16(out, &sh.key_share);
            }
            Message::EncryptedExtensions(ee) => {
                put16(out, &ee.transport_params);
                out.push(ee.login_methods);
            }
            Message::HostKey(k) => put16(out, k),
            Message::HostKeyVerify(s) => put16(out, s),
            Message::Finished(mac) => out.extend_from_slice(mac),
            Message::Login(login) => match login {
                LoginMessage::Password { user, password } => {
                    out.push(LOGIN_PASSWORD);
                    put8(out, user.as_bytes());
                    put16(out, password);
                }
                LoginMessage::PublicKey {
                    user,
                    key,
                    signature,
                } => {
                    out.push(LOGIN_PUBLICKEY);
                    put8(out, user.as_bytes());
                    put16(out, key);
                    put16(out, signature);
                }
                LoginMessage::Register {
                    user,
                    password,
                    key,
                } => {
                    out.push(LOGIN_REGISTER);
                    put8(out, user.as_bytes());
                    put16(out, password);
                    match key {
                        None => out.push(0),
                        Some((k, sig)) => {
                            out.push(1);
                            put16(out, k);
                            put16(out, sig);
                        }
                    }
                }
            },
            Message::LoginAccepted { account, message } => {
                put8(out, account.as_bytes());
                put16(out, message.as_bytes());
            }
        }
        let len = out.len() - body_start;
        debug_assert!(len < 1 << 24);
        out[start + 1..start + 4].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
    }

    /// If `buf` starts with a complete framed message, returns its total framed length.
    /// `Ok(None)` means more bytes are needed; an error means the header is unacceptable.
    pub fn framed_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_MESSAGE_LEN {
            return Err(DecodeError::Malformed("handshake message too long"));
        }
        Ok((buf.len() >= 4 + len).then_some(4 + len))
    }

    /// Decodes exactly one framed message occupying all of `framed`.
    pub fn decode(framed: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(framed);
        let ty = r.u8()?;
        let hi = r.u8()? as usize;
        let lo = r.u16()? as usize;
        let len = (hi << 16) | lo;
        if len != r.remaining() {
            return Err(DecodeError::Malformed("handshake message length mismatch"));
        }
        let msg = match ty {
            ty::CLIENT_HELLO => {
                let version = r.u32()?;
                let random = array32(&mut r)?;
                let n = r.u8()? as usize;
                let mut suites = Vec::with_capacity(n);
                for _ in 0..n {
                    suites.push(r.u16()?);
                }
                Message::ClientHello(ClientHello {
                    version,
                    random,
                    suites,
                    key_share: get16(&mut r)?.to_vec(),
                    transport_params: get16(&mut r)?.to_vec(),
                    server_name: get8(&mut r)?.to_vec(),
                })
            }
            ty::SERVER_HELLO => Message::ServerHello(ServerHello {
                random: array32(&mut r)?,
                suite: r.u16()?,
                key_share: get16(&mut r)?.to_vec(),
            }),
            ty::ENCRYPTED_EXTENSIONS => Message::EncryptedExtensions(EncryptedExtensions {
                transport_params: get16(&mut r)?.to_vec(),
                login_methods: r.u8()?,
            }),
            ty::HOST_KEY => Message::HostKey(get16(&mut r)?.to_vec()),
            ty::HOST_KEY_VERIFY => Message::HostKeyVerify(get16(&mut r)?.to_vec()),
            ty::FINISHED => Message::Finished(array32(&mut r)?),
            ty::LOGIN => {
                let method = r.u8()?;
                let user = utf8(get8(&mut r)?)?;
                Message::Login(match method {
                    LOGIN_PASSWORD => LoginMessage::Password {
                        user,
                        password: Zeroizing::new(get16(&mut r)?.to_vec()),
                    },
                    LOGIN_PUBLICKEY => LoginMessage::PublicKey {
                        user,
                        key: get16(&mut r)?.to_vec(),
                        signature: get16(&mut r)?.to_vec(),
                    },
                    LOGIN_REGISTER => {
                        let password = Zeroizing::new(get16(&mut r)?.to_vec());
                        let key = match r.u8()? {
                            0 => None,
                            1 => Some((get16(&mut r)?.to_vec(), get16(&mut r)?.to_vec())),
                            _ => return Err(DecodeError::Malformed("bad register key flag")),
                        };
                        LoginMessage::Register {
                            user,
                            password,
                            key,
                        }
                    }
                    _ => return Err(DecodeError::Malformed("unknown login method")),
                })
            }
            ty::LOGIN_ACCEPTED => Message::LoginAccepted {
                account: utf8(get8(&mut r)?)?,
                message: utf8(get16(&mut r)?)?,
            },
            _ => return Err(DecodeError::Malformed("unknown handshake message type")),
        };
        if !r.is_empty() {
            return Err(DecodeError::Malformed(
                "trailing bytes in handshake message",
            ));
        }
        Ok(msg)
    }
}

/// Writes a u8-length-prefixed field. Callers keep fields under 256 bytes (names).
fn put8(out: &mut Vec<u8>, v: &[u8]) {
    let n = v.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(&v[..n]);
}

fn put16(out: &mut Vec<u8>, v: &[u8]) {
    let n = v.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&v[..n]);
}

fn get8<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let n = r.u8()? as usize;
    r.bytes(n)
}

fn get16<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let n = r.u16()? as usize;
    r.bytes(n)
}

fn array32(r: &mut Reader<'_>) -> Result<[u8; 32], DecodeError> {
    let mut a = [0u8; 32];
    a.copy_from_slice(r.bytes(32)?);
    Ok(a)
}

fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed("name is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Message) {
        let mut v = Vec::new();
        m.encode(&mut v);
        assert_eq!(Message::framed_len(&v).unwrap(), Some(v.len()));
        assert_eq!(Message::framed_len(&v[..v.len() - 1]).unwrap(), None);
        assert_eq!(Message::decode(&v).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        roundtrip(Message::ClientHello(ClientHello {
            version: 0x5155_4c01,
            random: [7; 32],
            suites: vec![1, 2, 3],
            key_share: vec![9; 1216],
            transport_params: vec![1, 2, 3, 4],
            server_name: b"example".to_vec(),
        }));
        roundtrip(Message::ServerHello(ServerHello {
            random: [8; 32],
            suite: 1,
            key_share: vec![3; 1120],
        }));
        roundtrip(Message::EncryptedExtensions(EncryptedExtensions {
            transport_params: vec![5; 40],
            login_methods: methods::PASSWORD | methods::REGISTER,
        }));
        roundtrip(Message::HostKey(vec![1; 36]));
        roundtrip(Message::HostKeyVerify(vec![2; 68]));
        roundtrip(Message::Finished([4; 32]));
        roundtrip(Message::Login(LoginMessage::Password {
            user: "alice".into(),
            password: Zeroizing::new(b"hunter2".to_vec()),
        }));
        roundtrip(Message::Login(LoginMessage::PublicKey {
            user: "bob".into(),
            key: vec![1; 36],
            signature: vec![2; 68],
        }));
        roundtrip(Message::Login(LoginMessage::Register {
            user: "carol".into(),
            password: Zeroizing::new(b"pw".to_vec()),
            key: Some((vec![1; 36], vec![2; 68])),
        }));
        roundtrip(Message::LoginAccepted {
            account: "alice".into(),
            message: "welcome".into(),
        });
    }

    #[test]
    fn byte_exact_finished() {
        let mut v = Vec::new();
        Message::Finished([0xab; 32]).encode(&mut v);
        assert_eq!(&v[..4], &[20, 0, 0, 32]);
        assert_eq!(&v[4..], &[0xab; 32]);
    }

    #[test]
    fn password_is_not_debug_printed() {
        let m = LoginMessage::Password {
            user: "alice".into(),
            password: Zeroizing::new(b"hunter2".to_vec()),
        };
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    #[test]
    fn truncated_and_garbage_inputs_are_errors() {
        let mut v = Vec::new();
        Message::ServerHello(ServerHello {
            random: [8; 32],
            suite: 1,
            key_share: vec![3; 100],
        })
        .encode(&mut v);
        for cut in 0..v.len() {
            assert!(Message::decode(&v[..cut]).is_err());
        }
        assert!(Message::decode(&[99, 0, 0, 0]).is_err());
        assert!(Message::framed_len(&[1, 0xff, 0xff, 0xff]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Message::framed_len(&bytes);
            let _ = Message::decode(&bytes);
        }
    }
}
