//! Known-answer tests against published reference vectors. Each test names
//! its source. Plus the hybrid exchange's negative cases.

use quill_crypto::hostkey::{HostKeyPair, PublicKey, Signature};
use quill_crypto::kex::{self, server_exchange, ClientKeyExchange};
use quill_crypto::packet::{self, Keys, Labels, RetryKey, Suite, TAG_LEN};
use quill_crypto::random::SeededRandom;
use quill_crypto::schedule::{
    expand_label_with_prefix, hkdf_expand, hkdf_extract, next_generation, quic_v1_initial_secrets,
    quic_v2_initial_secrets, Secret, QUIC_V2_INITIAL_SALT, TLS13_LABEL_PREFIX,
};
use quill_crypto::Error;

/// Hex with any whitespace ignored (vectors are laid out as in the RFCs).
fn h(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).expect("valid hex in test vector")
}

fn h32(s: &str) -> [u8; 32] {
    h(s).try_into().expect("32-byte vector")
}

// ---------------------------------------------------------------------------
// RFC 7748 (X25519)
// ---------------------------------------------------------------------------

/// RFC 7748 §5.2, the two single scalar-multiplication vectors.
#[test]
fn rfc7748_section_5_2_scalar_mult() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            // The high bit of the last byte is set: X25519 must mask it.
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (k, u, out) in cases {
        assert_eq!(kex::x25519(&h32(k), &h32(u)).unwrap(), h32(out));
    }
}

/// RFC 7748 §5.2, the iterated test: 1 and 1,000 iterations.
#[test]
fn rfc7748_section_5_2_iterated() {
    let mut k = [0u8; 32];
    k[0] = 9;
    let mut u = k;
    for i in 1..=1000 {
        let next = kex::x25519(&k, &u).unwrap();
        u = k;
        k = next;
        if i == 1 {
            assert_eq!(
                k,
                h32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
            );
        }
    }
    assert_eq!(
        k,
        h32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    );
}

/// RFC 7748 §6.1, the Diffie-Hellman example.
#[test]
fn rfc7748_section_6_1_diffie_hellman() {
    let a = h32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let a_pub = h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let b = h32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let b_pub = h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let k = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(kex::x25519_public(&a).unwrap(), a_pub);
    assert_eq!(kex::x25519_public(&b).unwrap(), b_pub);
    assert_eq!(kex::x25519(&a, &b_pub).unwrap(), k);
    assert_eq!(kex::x25519(&b, &a_pub).unwrap(), k);
}

/// Points of small order, which give an all-zero shared secret for every
/// clamped scalar (RFC 7748 §6.1: "check for the all-zero value and abort").
/// The list: 0, 1, the two points of order 8, and p-1, p, p+1 (non-canonical
/// encodings of order-2, 0 and 1).
const LOW_ORDER_POINTS: [&str; 7] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

#[test]
fn x25519_low_order_points_are_rejected() {
    let scalar = h32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
    for p in LOW_ORDER_POINTS {
        assert_eq!(
            kex::x25519(&scalar, &h32(p)),
            Err(Error::InvalidX25519Share),
            "{p}"
        );
    }
}

// ---------------------------------------------------------------------------
// RFC 5869 (HKDF-SHA256), Appendix A test cases 1-3
// ---------------------------------------------------------------------------

#[test]
fn rfc5869_hkdf_sha256_test_cases_1_to_3() {
    let ikm_long: Vec<u8> = (0x00..=0x4f).collect();
    let salt_long: Vec<u8> = (0x60..=0xaf).collect();
    let info_long: Vec<u8> = (0xb0..=0xff).collect();
    type Case = (
        &'static str,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        &'static str,
        &'static str,
    );
    let cases: [Case; 3] = [
        (
            "A.1 test case 1",
            vec![0x0b; 22],
            h("000102030405060708090a0b0c"),
            h("f0f1f2f3f4f5f6f7f8f9"),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf
             34007208d5b887185865",
        ),
        (
            "A.2 test case 2",
            ikm_long,
            salt_long,
            info_long,
            "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c
             59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71
             cc30c58179ec3e87c14c01d5c1f3434f1d87",
        ),
        (
            "A.3 test case 3",
            vec![0x0b; 22],
            vec![],
            vec![],
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d
             9d201395faa4b61a96c8",
        ),
    ];
    for (name, ikm, salt, info, prk, okm) in cases {
        let got_prk = hkdf_extract(&salt, &ikm);
        assert_eq!(&got_prk.as_bytes()[..], &h(prk)[..], "{name} PRK");
        let want = h(okm);
        let mut out = vec![0u8; want.len()];
        hkdf_expand(&got_prk, &[&info], &mut out);
        assert_eq!(out, want, "{name} OKM");
    }
}

// ---------------------------------------------------------------------------
// RFC 9001 Appendix A (QUIC v1 salt and labels through our code)
// ---------------------------------------------------------------------------

const DCID: &str = "8394c8f03e515708";

fn expand(secret: &Secret, label: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    expand_label_with_prefix(secret, TLS13_LABEL_PREFIX, label, b"", &mut out);
    out
}

/// RFC 9001 A.1: initial secrets, keys, IVs and header protection keys.
#[test]
fn rfc9001_a1_keys() {
    assert_eq!(
        hkdf_extract(&quill_crypto::schedule::QUIC_V1_INITIAL_SALT, &h(DCID)).as_bytes()[..],
        h("7db5df06e7a69e432496adedb0085192 3595221596ae2ae9fb8115c1e9ed0a44")[..]
    );
    let (client, server) = quic_v1_initial_secrets(&h(DCID));
    // (side, secret, its bytes, "quic key", "quic iv", "quic hp")
    let sides = [
        (
            "client",
            &client,
            "c00cf151ca5be075ed0ebfb5c80323c4 2d6b7db67881289af4008f1f6c357aea",
            "1f369613dd76d5467730efcbe3b1a22d",
            "fa044b2f42a3fd3b46fb255c",
            "9f50449e04a0e810283a1e9933adedd2",
        ),
        (
            "server",
            &server,
            "3c199828fd139efd216c155ad844cc81 fb82fa8d7446fa7d78be803acdda951b",
            "cf3a5331653c364c88f0f379b6067e37",
            "0ac1493ca1905853b0bba03e",
            "c206b8d9b9f0f37644430b490eeaa314",
        ),
    ];
    for (side, secret, bytes, key, iv, hp) in sides {
        assert_eq!(secret.as_bytes()[..], h(bytes)[..], "{side} secret");
        assert_eq!(expand(secret, b"quic key", 16), h(key), "{side} key");
        assert_eq!(expand(secret, b"quic iv", 12), h(iv), "{side} iv");
        assert_eq!(expand(secret, b"quic hp", 16), h(hp), "{side} hp");
    }
}

/// Protects `payload` under `header` (whose packet number field is the last
/// `pn_len` bytes) as RFC 9001 §5.3-§5.4 describes; returns the packet.
fn protect(keys: &Keys, pn: u64, header: &[u8], pn_len: usize, payload: &[u8]) -> Vec<u8> {
    let mut body = payload.to_vec();
    let mut tag = [0u8; TAG_LEN];
    keys.packet
        .seal_in_place(pn, header, &mut body, &mut tag)
        .unwrap();
    let mut packet = [header, &body, &tag].concat();
    // §5.4.2: the sample starts 4 bytes after the start of the packet number.
    let pn_offset = header.len() - pn_len;
    let sample = &packet[pn_offset + 4..pn_offset + 4 + 16];
    let mask = keys.header.mask(sample).unwrap();
    // §5.4.1: long headers protect 4 bits of the first byte, short 5 bits.
    packet[0] ^= mask[0] & if packet[0] & 0x80 != 0 { 0x0f } else { 0x1f };
    for i in 0..pn_len {
        packet[pn_offset + i] ^= mask[1 + i];
    }
    packet
}

/// Removes protection from `packet` (packet number at `pn_offset`),
/// returning the plaintext payload.
fn unprotect(keys: &Keys, pn_offset: usize, packet: &[u8]) -> (Vec<u8>, u64) {
    let mut p = packet.to_vec();
    let mask = keys.header.mask(&p[pn_offset + 4..pn_offset + 20]).unwrap();
    p[0] ^= mask[0] & if p[0] & 0x80 != 0 { 0x0f } else { 0x1f };
    let pn_len = usize::from(p[0] & 0x03) + 1;
    let mut pn = 0u64;
    for i in 0..pn_len {
        p[pn_offset + i] ^= mask[1 + i];
        pn = (pn << 8) | u64::from(p[pn_offset + i]);
    }
    let (header, body) = p.split_at_mut(pn_offset + pn_len);
    let n = keys.packet.open_in_place(pn, header, body).unwrap();
    (body[..n].to_vec(), pn)
}

const A2_CRYPTO_FRAME: &str = "
   060040f1010000ed0303ebf8fa56f129 39b9584a3896472ec40bb863cfd3e868
   04fe3a47f06a2b69484c000004130113 02010000c000000010000e00000b6578
   616d706c652e636f6dff01000100000a 00080006001d00170018001000070005
   04616c706e0005000501000000000033 00260024001d00209370b2c9caa47fba
   baf4559fedba753de171fa71f50f1ce1 5d43e994ec74d748002b000302030400
   0d0010000e0403050306030203080408 050806002d00020101001c0002400100
   3900320408ffffffffffffffff050480 00ffff07048000ffff08011001048000
   75300901100f088394c8f03e51570806 048000ffff";

const A2_PROTECTED_PACKET: &str = "
   c000000001088394c8f03e5157080000 449e7b9aec34d1b1c98dd7689fb8ec11
   d242b123dc9bd8bab936b47d92ec356c 0bab7df5976d27cd449f63300099f399
   1c260ec4c60d17b31f8429157bb35a12 82a643a8d2262cad67500cadb8e7378c
   8eb7539ec4d4905fed1bee1fc8aafba1 7c750e2c7ace01e6005f80fcb7df6212
   30c83711b39343fa028cea7f7fb5ff89 eac2308249a02252155e2347b63d58c5
   457afd84d05dfffdb20392844ae81215 4682e9cf012f9021a6f0be17ddd0c208
   4dce25ff9b06cde535d0f920a2db1bf3 62c23e596d11a4f5a6cf3948838a3aec
   4e15daf8500a6ef69ec4e3feb6b1d98e 610ac8b7ec3faf6ad760b7bad1db4ba3
   485e8a94dc250ae3fdb41ed15fb6a8e5 eba0fc3dd60bc8e30c5c4287e53805db
   059ae0648db2f64264ed5e39be2e20d8 2df566da8dd5998ccabdae053060ae6c
   7b4378e846d29f37ed7b4ea9ec5d82e7 961b7f25a9323851f681d582363aa5f8
   9937f5a67258bf63ad6f1a0b1d96dbd4 faddfcefc5266ba6611722395c906556
   be52afe3f565636ad1b17d508b73d874 3eeb524be22b3dcbc2c7468d54119c74
   68449a13d8e3b95811a198f3491de3e7 fe942b330407abf82a4ed7c1b311663a
   c69890f4157015853d91e923037c227a 33cdd5ec281ca3f79c44546b9d90ca00
   f064c99e3dd97911d39fe9c5d0b23a22 9a234cb36186c4819e8b9c5927726632
   291d6a418211cc2962e20fe47feb3edf 330f2c603a9d48c0fcb5699dbfe58964
   25c5bac4aee82e57a85aaf4e2513e4f0 5796b07ba2ee47d80506f8d2c25e50fd
   14de71e6c418559302f939b0e1abd576 f279c4b2e0feb85c1f28ff18f58891ff
   ef132eef2fa09346aee33c28eb130ff2 8f5b766953334113211996d20011a198
   e3fc433f9f2541010ae17c1bf202580f 6047472fb36857fe843b19f5984009dd
   c324044e847a4f4a0ab34f719595de37 252d6235365e9b84392b061085349d73
   203a4a13e96f5432ec0fd4a1ee65accd d5e3904df54c1da510b0ff20dcc0c77f
   cb2c0e0eb605cb0504db87632cf3d8b4 dae6e705769d1de354270123cb11450e
   fc60ac47683d7b8d0f811365565fd98c 4c8eb936bcab8d069fc33bd801b03ade
   a2e1fbc5aa463d08ca19896d2bf59a07 1b851e6c239052172f296bfb5e724047
   90a2181014f3b94a4e97d117b4381303 68cc39dbb2d198065ae3986547926cd2
   162f40a29f0c3c8745c0f50fba3852e5 66d44575c29d39a03f0cda721984b6f4
   40591f355e12d439ff150aab7613499d bd49adabc8676eef023b15b65bfc5ca0
   6948109f23f350db82123535eb8a7433 bdabcb909271a6ecbcb58b936a88cd4e
   8f2e6ff5800175f113253d8fa9ca8885 c2f552e657dc603f252e1a8e308f76f0
   be79e2fb8f5d5fbbe2e30ecadd220723 c8c0aea8078cdfcb3868263ff8f09400
   54da48781893a7e49ad5aff4af300cd8 04a6b6279ab3ff3afb64491c85194aab
   760d58a606654f9f4400e8b38591356f bf6425aca26dc85244259ff2b19c41b9
   f96f3ca9ec1dde434da7d2d392b905dd f3d1f9af93d1af5950bd493f5aa731b4
   056df31bd267b6b90a079831aaf579be 0a39013137aac6d404f518cfd4684064
   7e78bfe706ca4cf5e9c5453e9f7cfd2b 8b4c8d169a44e55c88d4a9a7f9474241
   e221af44860018ab0856972e194cd934";

/// RFC 9001 A.2: the client Initial, all 1200 protected bytes, both ways.
#[test]
fn rfc9001_a2_client_initial() {
    let (client, _) = quic_v1_initial_secrets(&h(DCID));
    let keys = Keys::new(Suite::Aes128Gcm, &client, &Labels::QUIC_V1);

    let mut payload = h(A2_CRYPTO_FRAME);
    payload.resize(1162, 0); // PADDING frames
    let header = h("c300000001088394c8f03e5157080000449e00000002");

    // The intermediate values the appendix shows.
    let mut body = payload.clone();
    let mut tag = [0u8; TAG_LEN];
    keys.packet
        .seal_in_place(2, &header, &mut body, &mut tag)
        .unwrap();
    assert_eq!(body[..16], h("d1b1c98dd7689fb8ec11d242b123dc9b")[..]);
    assert_eq!(
        keys.header.mask(&body[..16]).unwrap()[..],
        h("437b9aec36")[..]
    );

    let expected = h(A2_PROTECTED_PACKET);
    assert_eq!(expected.len(), 1200);
    let packet = protect(&keys, 2, &header, 4, &payload);
    assert_eq!(
        packet[..22],
        h("c000000001088394c8f03e5157080000449e7b9aec34")[..]
    );
    assert_eq!(packet, expected);

    let (plain, pn) = unprotect(&keys, 18, &expected);
    assert_eq!(pn, 2);
    assert_eq!(plain, payload);
}

/// RFC 9001 A.3: the server Initial.
#[test]
fn rfc9001_a3_server_initial() {
    let (_, server) = quic_v1_initial_secrets(&h(DCID));
    let keys = Keys::new(Suite::Aes128Gcm, &server, &Labels::QUIC_V1);
    let payload = h("
        02000000000600405a020000560303ee fce7f7b37ba1d1632e96677825ddf739
        88cfc79825df566dc5430b9a045a1200 130100002e00330024001d00209d3c94
        0d89690b84d08a60993c144eca684d10 81287c834d5311bcf32bb9da1a002b00
        020304");
    let header = h("c1000000010008f067a5502a4262b50040750001");
    let expected = h("
        cf000000010008f067a5502a4262b500 4075c0d95a482cd0991cd25b0aac406a
        5816b6394100f37a1c69797554780bb3 8cc5a99f5ede4cf73c3ec2493a1839b3
        dbcba3f6ea46c5b7684df3548e7ddeb9 c3bf9c73cc3f3bded74b562bfb19fb84
        022f8ef4cdd93795d77d06edbb7aaf2f 58891850abbdca3d20398c276456cbc4
        2158407dd074ee");
    let packet = protect(&keys, 1, &header, 2, &payload);
    assert_eq!(packet[22..38], h("2cd0991cd25b0aac406a5816b6394100")[..]);
    assert_eq!(packet, expected);
    let (plain, pn) = unprotect(&keys, 18, &expected);
    assert_eq!((plain, pn), (payload, 1));
}

/// RFC 9001 A.4: the Retry integrity tag.
#[test]
fn rfc9001_a4_retry() {
    let retry = h(
        "ff000000010008f067a5502a4262b574 6f6b656e04a265ba2eff4d829058fb3f
                   0f2496ba",
    );
    let (body, tag) = retry.split_at(retry.len() - 16);
    assert_eq!(
        packet::retry_tag(&RetryKey::QUIC_V1, &h(DCID), body)[..],
        tag[..]
    );
    assert!(packet::verify_retry_tag(
        &RetryKey::QUIC_V1,
        &h(DCID),
        &retry
    ));
    assert!(!packet::verify_retry_tag(
        &RetryKey::QUILL,
        &h(DCID),
        &retry
    ));
}

/// RFC 9001 A.5: ChaCha20-Poly1305 short header packet, and the key update
/// secret ("ku").
#[test]
fn rfc9001_a5_chacha20_short_header() {
    let secret = Secret::from_bytes(h32(
        "9ac312a7f877468ebe69422748ad00a1 5443f18203a07d6060f688f30f21632b",
    ));
    assert_eq!(
        expand(&secret, b"quic key", 32),
        h("c6d98ff3441c3fe1b2182094f69caa2e d4b716b65488960a7a984979fb23e1c8")
    );
    assert_eq!(
        expand(&secret, b"quic iv", 12),
        h("e0459b3474bdd0e44a41c144")
    );
    assert_eq!(
        expand(&secret, b"quic hp", 32),
        h("25a282b9e82f06f21f488917a4fc8f1b 73573685608597d0efcb076b0ab7a7a4")
    );
    assert_eq!(
        next_generation(&secret, &Labels::QUIC_V1).as_bytes()[..],
        h("1223504755036d556342ee9361d25342 1a826c9ecdf3c7148684b36b714881f9")[..]
    );

    let keys = Keys::new(Suite::ChaCha20Poly1305, &secret, &Labels::QUIC_V1);
    let header = h("4200bff4");
    let mut body = h("01");
    let mut tag = [0u8; TAG_LEN];
    keys.packet
        .seal_in_place(654360564, &header, &mut body, &mut tag)
        .unwrap();
    assert_eq!(
        [&body[..], &tag[..]].concat(),
        h("655e5cd55c41f69080575d7999c25a5bfb")
    );
    assert_eq!(
        keys.header
            .mask(&h("5e5cd55c41f69080575d7999c25a5bfb"))
            .unwrap()[..],
        h("aefefe7d03")[..]
    );
    let packet = protect(&keys, 654360564, &header, 3, &h("01"));
    assert_eq!(packet, h("4cfe4189655e5cd55c41f69080575d7999c25a5bfb"));

    // Unprotect: the 3 low-order bytes of the packet number come back.
    let (plain, truncated_pn) = {
        let mut p = packet.clone();
        let mask = keys.header.mask(&p[5..21]).unwrap();
        p[0] ^= mask[0] & 0x1f;
        for i in 0..3 {
            p[1 + i] ^= mask[1 + i];
        }
        let pn = u64::from_be_bytes([0, 0, 0, 0, 0, p[1], p[2], p[3]]);
        let (hdr, b) = p.split_at_mut(4);
        let n = keys.packet.open_in_place(654360564, hdr, b).unwrap();
        (b[..n].to_vec(), pn)
    };
    assert_eq!(truncated_pn, 654360564 & 0xff_ffff);
    assert_eq!(plain, h("01"));
}

// ---------------------------------------------------------------------------
// RFC 9369 Appendix A (QUIC v2 salt, labels and Retry key through our code)
// ---------------------------------------------------------------------------

/// RFC 9369 A.1: the initial secret, then per side (client, server) its secret and
/// the "quicv2 key", "quicv2 iv" and "quicv2 hp" values.
#[test]
fn rfc9369_a1_keys() {
    assert_eq!(
        hkdf_extract(&QUIC_V2_INITIAL_SALT, &h(DCID)).as_bytes()[..],
        h("2062e8b3cd8d52092614b8071d0aa1fb 7c2e3ac193f78b280e72d8f5751f6aba")[..]
    );
    let (client, server) = quic_v2_initial_secrets(&h(DCID));
    let want = [
        [
            "14ec9d6eb9fd7af83bf5a668bc17a7e2 83766aade7ecd0891f70f9ff7f4bf47b",
            "8b1a0bc121284290a29e0971b5cd045d",
            "91f73e2351d8fa91660e909f",
            "45b95e15235d6f45a6b19cbcb0294ba9",
        ],
        [
            "0263db1782731bf4588e7e4d93b7463907cb8cd8200b5da55a8bd488eafc37c1",
            "82db637861d55e1d011f19ea71d5d2a7",
            "dd13c276499c0249d3310652",
            "edf6d05c83121201b436e16877593c3a",
        ],
    ];
    for (secret, [bytes, rest @ ..]) in [(&client, want[0]), (&server, want[1])] {
        assert_eq!(secret.as_bytes()[..], h(bytes)[..]);
        let labels: [&[u8]; 3] = [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"];
        for (label, value) in labels.into_iter().zip(rest) {
            assert_eq!(expand(secret, label, h(value).len()), h(value));
        }
    }
}

const RFC9369_A2_PROTECTED_PACKET: &str = "
   d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485
   dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04
   9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d
   250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a
   12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500
   cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68
   18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33
   12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3
   d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd
   6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520
   bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045
   636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f
   ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12
   16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5
   4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4
   fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b
   8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7
   14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9
   9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91
   abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd
   80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db
   848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18
   d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15
   c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc
   7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61
   f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710
   10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b
   3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e
   06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce
   8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1
   34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1
   e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd
   5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3
   8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89
   d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53
   6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19
   9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b
   a18b2faa745b6fe189cf772a9f84cbfc";

/// Seals `payload` under `header` as the RFC's `expected` packet, byte for byte, and
/// opens `expected` back to the payload and packet number (number offset 18).
fn same_both_ways(keys: &Keys, pn: u64, header: &str, payload: &[u8], expected: &[u8]) {
    let header = h(header);
    let pn_len = usize::from(header[0] & 3) + 1;
    assert_eq!(protect(keys, pn, &header, pn_len, payload), expected);
    assert_eq!(unprotect(keys, 18, expected), (payload.to_vec(), pn));
}

/// RFC 9369 A.2 and A.3: the client Initial (RFC 9001 A.2's CRYPTO frame padded to
/// 1162 bytes; v2's Initial type bits 0b01 make the first byte 0xd3) and the server
/// Initial (0xd1), each protected and opened.
#[test]
fn rfc9369_a2_a3_initials() {
    let (client, server) = quic_v2_initial_secrets(&h(DCID));
    let mut hello = h(A2_CRYPTO_FRAME);
    hello.resize(1162, 0);
    let client_packet = h(RFC9369_A2_PROTECTED_PACKET);
    assert_eq!(client_packet.len(), 1200);
    same_both_ways(
        &Keys::new(Suite::Aes128Gcm, &client, &Labels::QUIC_V2),
        2,
        "d36b3343cf088394c8f03e5157080000449e00000002",
        &hello,
        &client_packet,
    );
    let server_hello = h("
        02000000000600405a020000560303ee fce7f7b37ba1d1632e96677825ddf739
        88cfc79825df566dc5430b9a045a1200 130100002e00330024001d00209d3c94
        0d89690b84d08a60993c144eca684d10 81287c834d5311bcf32bb9da1a002b00
        020304");
    same_both_ways(
        &Keys::new(Suite::Aes128Gcm, &server, &Labels::QUIC_V2),
        1,
        "d16b3343cf0008f067a5502a4262b50040750001",
        &server_hello,
        &h(
            "dc6b3343cf0008f067a5502a4262b5004075d92faaf16f05d8a4398c47089698
            baeea26b91eb761d9b89237bbf87263017915358230035f7fd3945d88965cf17
            f9af6e16886c61bfc703106fbaf3cb4cfa52382dd16a393e42757507698075b2
            c984c707f0a0812d8cd5a6881eaf21ceda98f4bd23f6fe1a3e2c43edd9ce7ca8
            4bed8521e2e140",
        ),
    );
}

/// RFC 9369 A.4: the Retry integrity tag under v2's key (first byte 0xcf: Retry is
/// 0b00 in v2), and not under v1's.
#[test]
fn rfc9369_a4_retry() {
    let retry = h("cf6b3343cf0008f067a5502a4262b5746f6b656ec8646ce8bfe33952d955543665dcc7b6");
    let (body, tag) = retry.split_at(retry.len() - 16);
    let computed = packet::retry_tag(&RetryKey::QUIC_V2, &h(DCID), body);
    assert_eq!(computed[..], tag[..]);
    let verifies = |key| packet::verify_retry_tag(key, &h(DCID), &retry);
    assert!(verifies(&RetryKey::QUIC_V2) && !verifies(&RetryKey::QUIC_V1));
}

/// RFC 9369 A.5: the ChaCha20-Poly1305 keys of the 1-RTT secret, the next secret
/// ("quicv2 ku") and the protected short-header PING.
#[test]
fn rfc9369_a5_chacha20_short_header() {
    let secret = Secret::from_bytes(h32(
        "9ac312a7f877468ebe69422748ad00a1 5443f18203a07d6060f688f30f21632b",
    ));
    let values: [(&[u8], &str); 3] = [
        (
            b"quicv2 key",
            "3bfcddd72bcf02541d7fa0dd1f5f9eeea817e09a6963a0e6c7df0f9a1bab90f2",
        ),
        (b"quicv2 iv", "a6b5bc6ab7dafce30ffff5dd"),
        (
            b"quicv2 hp",
            "d659760d2ba434a226fd37b35c69e2da8211d10c4f12538787d65645d5d1b8e2",
        ),
    ];
    for (label, value) in values {
        assert_eq!(expand(&secret, label, h(value).len()), h(value));
    }
    let next = next_generation(&secret, &Labels::QUIC_V2);
    let want_next = h("c69374c49e3d2a9466fa689e49d476db5d0dfbc87d32ceeaa6343fd0ae4c7d88");
    assert_eq!(next.as_bytes()[..], want_next[..]);
    let keys = Keys::new(Suite::ChaCha20Poly1305, &secret, &Labels::QUIC_V2);
    let packet = protect(&keys, 654360564, &h("4200bff4"), 3, &h("01"));
    assert_eq!(packet, h("5558b1c60ae7b6b932bc27d786f4bc2bb20f2162ba"));
}

// ---------------------------------------------------------------------------
// ML-KEM-768 (FIPS 203)
// ---------------------------------------------------------------------------

/// The "accumulated" known-answer test of the Go standard library's
/// `crypto/mlkem` (src/crypto/mlkem/mlkem_test.go, `TestAccumulated`),
/// which targets final FIPS 203 and follows C2SP/CCTV's accumulated-vector
/// scheme: a SHAKE-128 stream with empty input supplies, per iteration,
/// `seed = d || z` (64 bytes), `m` (32 bytes) and a random ciphertext
/// (1088 bytes); a second SHAKE-128 absorbs `ek`, `ct`, `k` and the
/// implicit-rejection `k` of the random ciphertext; its first 32 bytes
/// must equal the published hash. Go publishes the hash for 100 and for
/// 10,000 iterations.
fn mlkem768_accumulated(n: usize) -> String {
    use libcrux_ml_kem::mlkem768;
    const PER_ITER: usize = 64 + 32 + 1088;
    let mut stream = vec![0u8; n * PER_ITER];
    libcrux_sha3::shake128_ema(&mut stream, b"");
    let mut absorbed = Vec::with_capacity(n * (1184 + 1088 + 32 + 32));
    for chunk in stream.chunks_exact(PER_ITER) {
        let seed: [u8; 64] = chunk[..64].try_into().unwrap();
        let m: [u8; 32] = chunk[64..96].try_into().unwrap();
        let random_ct = mlkem768::MlKem768Ciphertext::try_from(&chunk[96..]).unwrap();

        let pair = mlkem768::generate_key_pair(seed);
        absorbed.extend_from_slice(pair.pk());
        let (ct, k) = mlkem768::encapsulate(pair.public_key(), m);
        absorbed.extend_from_slice(ct.as_slice());
        absorbed.extend_from_slice(&k);
        assert_eq!(mlkem768::decapsulate(pair.private_key(), &ct), k);
        absorbed.extend_from_slice(&mlkem768::decapsulate(pair.private_key(), &random_ct));
    }
    let mut out = [0u8; 32];
    libcrux_sha3::shake128_ema(&mut out, &absorbed);
    hex::encode(out)
}

#[test]
fn mlkem768_accumulated_100() {
    assert_eq!(
        mlkem768_accumulated(100),
        "1114b1b6699ed191734fa339376afa7e285c9e6acf6ff0177d346696ce564415"
    );
}

#[test]
fn mlkem768_accumulated_10000() {
    assert_eq!(
        mlkem768_accumulated(10_000),
        "8a518cc63da366322a8e7a818c7a0d63483cb3528d34a4cf42f35d5ad73f22fc"
    );
}

// ---------------------------------------------------------------------------
// RFC 8032 §7.1 (Ed25519) tests 1-3
// ---------------------------------------------------------------------------

#[test]
fn rfc8032_ed25519_tests_1_to_3() {
    let cases = [
        (
            "TEST 1",
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "TEST 2",
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "TEST 3",
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];
    for (name, sk, pk, msg, sig) in cases {
        let pair = HostKeyPair::from_seed(&h32(sk)).unwrap();
        let public = pair.public();
        assert_eq!(public.key_bytes(), &h(pk)[..], "{name} public key");
        let msg = h(msg);
        let signature = pair.sign(&msg);
        assert_eq!(signature.as_bytes(), &h(sig)[..], "{name} signature");
        let from_vector = Signature::from_raw(public.algorithm(), &h(sig)).unwrap();
        let public2 =
            PublicKey::from_raw(quill_crypto::hostkey::Algorithm::Ed25519, &h(pk)).unwrap();
        assert_eq!(public2.verify(&msg, &from_vector), Ok(()), "{name} verify");
        let mut tampered = msg.clone();
        tampered.push(0);
        assert_eq!(
            public2.verify(&tampered, &from_vector),
            Err(Error::BadSignature)
        );
    }
}

// ---------------------------------------------------------------------------
// RFC 9106 §5.3 (Argon2id)
// ---------------------------------------------------------------------------

/// RFC 9106 §5.3 Argon2id test vector, through the same `argon2` crate and
/// algorithm/version our `password` module uses.
#[test]
fn rfc9106_argon2id_vector() {
    use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};
    let params = ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .output_len(32)
        .data(AssociatedData::new(&[0x04; 12]).unwrap())
        .build()
        .unwrap();
    let secret = [0x03u8; 8];
    let ctx =
        Argon2::new_with_secret(&secret, Algorithm::Argon2id, Version::V0x13, params).unwrap();
    let mut out = [0u8; 32];
    ctx.hash_password_into(&[0x01; 32], &[0x02; 16], &mut out)
        .unwrap();
    assert_eq!(
        out[..],
        h("0d 64 0d f5 8d 78 76 6c 08 c0 37 a3 4a 8b 53 c9
           d0 1e f0 45 2d 75 b6 5e b5 25 20 e9 6b 01 e6 59")[..]
    );
}

// ---------------------------------------------------------------------------
// Hybrid exchange: round trip and negative cases
// ---------------------------------------------------------------------------

fn exchange(seed: u8) -> (ClientKeyExchange, Vec<u8>, Vec<u8>, [u8; 64]) {
    let rng = SeededRandom::new([seed; 32]);
    let client = ClientKeyExchange::generate(&rng).unwrap();
    let share = client.share().to_vec();
    let (server_share, ss) = server_exchange(&share, &rng).unwrap();
    (client, share, server_share, *ss.as_bytes())
}

#[test]
fn hybrid_round_trip() {
    let (client, share, server_share, server_ss) = exchange(1);
    assert_eq!(share.len(), kex::CLIENT_SHARE_LEN);
    assert_eq!(server_share.len(), kex::SERVER_SHARE_LEN);
    let client_ss = client.finish(&server_share).unwrap();
    assert_eq!(client_ss.as_bytes(), &server_ss);
}

/// ML-KEM implicit rejection: a tampered ciphertext is not an error but
/// yields a different ML-KEM secret (FIPS 203 §7.3), so the handshake
/// fails later at Finished. The X25519 half still agrees.
#[test]
fn tampered_mlkem_ciphertext_gives_different_secret() {
    for pos in [0, 500, kex::MLKEM768_CT_LEN - 1] {
        let (client, _, mut server_share, server_ss) = exchange(2);
        server_share[pos] ^= 0x01;
        let client_ss = client.finish(&server_share).unwrap();
        assert_ne!(client_ss.as_bytes()[..32], server_ss[..32]);
        assert_eq!(client_ss.as_bytes()[32..], server_ss[32..]);
    }
}

#[test]
fn tampered_x25519_share_gives_different_secret() {
    let (client, _, mut server_share, server_ss) = exchange(3);
    server_share[kex::MLKEM768_CT_LEN + 3] ^= 0x01;
    let client_ss = client.finish(&server_share).unwrap();
    assert_eq!(client_ss.as_bytes()[..32], server_ss[..32]);
    assert_ne!(client_ss.as_bytes()[32..], server_ss[32..]);
}

#[test]
fn low_order_x25519_in_either_share_is_rejected() {
    for p in LOW_ORDER_POINTS {
        let (_, mut share, _, _) = exchange(4);
        share[kex::MLKEM768_EK_LEN..].copy_from_slice(&h(p));
        let rng = SeededRandom::new([40; 32]);
        assert_eq!(
            server_exchange(&share, &rng).map(|_| ()),
            Err(Error::InvalidX25519Share),
            "client share with {p}"
        );

        let (client, _, mut server_share, _) = exchange(5);
        server_share[kex::MLKEM768_CT_LEN..].copy_from_slice(&h(p));
        assert_eq!(
            client.finish(&server_share).map(|_| ()),
            Err(Error::InvalidX25519Share),
            "server share with {p}"
        );
    }
}

/// FIPS 203 §7.2 modulus check: an encapsulation key with any coefficient
/// `>= q = 3329` is refused by the server. ByteEncode12 packs two
/// coefficients into 3 bytes: `c0 = b0 | (b1 & 0x0f) << 8`,
/// `c1 = b1 >> 4 | b2 << 4`.
#[test]
fn invalid_encapsulation_key_is_rejected() {
    let rng = SeededRandom::new([41; 32]);
    let set_c0 = |ek: &mut [u8], at: usize, v: u16| {
        ek[at] = v as u8;
        ek[at + 1] = (ek[at + 1] & 0xf0) | (v >> 8) as u8;
    };
    let set_c1 = |ek: &mut [u8], at: usize, v: u16| {
        ek[at + 1] = (ek[at + 1] & 0x0f) | ((v & 0x0f) << 4) as u8;
        ek[at + 2] = (v >> 4) as u8;
    };
    let (_, share, _, _) = exchange(6);
    for (which, at, v) in [
        (0, 0, 3329),    // first coefficient = q
        (0, 0, 4095),    // first coefficient = 2^12 - 1
        (1, 573, 3329),  // middle of the first polynomial
        (1, 1149, 4095), // the very last coefficient
        (0, 384 * 2, 3330),
    ] {
        let mut bad = share.clone();
        if which == 0 {
            set_c0(&mut bad, at, v);
        } else {
            set_c1(&mut bad, at, v);
        }
        assert_eq!(
            server_exchange(&bad, &rng).map(|_| ()),
            Err(Error::InvalidEncapsulationKey),
            "coefficient {v} at byte {at}"
        );
    }
    // The largest valid coefficient (q - 1) is accepted.
    let mut ok = share.clone();
    set_c0(&mut ok, 0, 3328);
    assert!(server_exchange(&ok, &rng).is_ok());
}

#[test]
fn truncated_and_oversized_shares_are_errors() {
    let (_, share, server_share, _) = exchange(7);
    let rng = SeededRandom::new([42; 32]);
    for n in [0, 1, 32, 1184, 1215, 1217, 4096] {
        let mut v = share.clone();
        v.resize(n, 0);
        assert!(matches!(
            server_exchange(&v, &rng),
            Err(Error::InvalidLength { .. })
        ));
    }
    for n in [0, 1, 32, 1088, 1119, 1121, 4096] {
        let (client, ..) = exchange(8);
        let mut v = server_share.clone();
        v.resize(n, 0);
        assert!(matches!(
            client.finish(&v),
            Err(Error::InvalidLength { .. })
        ));
    }
}

mod no_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn untrusted_inputs_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let rng = SeededRandom::new([43; 32]);
            let _ = server_exchange(&data, &rng);
            let mut padded = data.clone();
            padded.resize(kex::CLIENT_SHARE_LEN, 0xff);
            let _ = server_exchange(&padded, &rng);
            let client = ClientKeyExchange::generate(&rng).unwrap();
            let _ = client.finish(&data);
            let mut padded = data.clone();
            padded.resize(kex::SERVER_SHARE_LEN, 0x00);
            let client = ClientKeyExchange::generate(&rng).unwrap();
            let _ = client.finish(&padded);

            let _ = PublicKey::from_bytes(&data);
            let _ = Signature::from_bytes(&data);
            let _ = PublicKey::from_openssh_line(&String::from_utf8_lossy(&data));
            let _ = quill_crypto::password::verify_password(&String::from_utf8_lossy(&data), b"pw");

            for suite in Suite::ALL {
                let keys = Keys::new(suite, &Secret::from_bytes([1; 32]), &Labels::QUILL);
                let mut buf = data.clone();
                prop_assert!(keys.packet.open_in_place(1, &[0x40], &mut buf).is_err());
                let _ = keys.header.mask(&data);
            }
            let _ = packet::verify_retry_tag(&RetryKey::QUILL, &data[..data.len().min(30)], &data);
        }
    }
}
