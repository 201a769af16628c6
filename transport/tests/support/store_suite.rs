//! The account-store suite that every [`AccountStore`] must pass, run by
//! tests/accounts.rs on the SQLite file and tests/accounts_postgres.rs on a real
//! PostgreSQL server.

#![allow(dead_code)]

use std::sync::Arc;

use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_crypto::password::verify_password;
use quill_transport::auth::{AccountStore, StoreError, MAX_KEYS_PER_ACCOUNT};

fn key(seed: u8) -> PublicKey {
    HostKeyPair::from_seed(&[seed; 32]).unwrap().public()
}

/// Every method on a fresh store; `reopen` opens the same database again.
pub fn crud_and_case_folding(store: &dyn AccountStore, reopen: &dyn Fn() -> Box<dyn AccountStore>) {
    assert!(store.list().unwrap().is_empty());

    let alice = store
        .add_user("Alice", Some(b"correct horse"), &[])
        .unwrap();
    assert_eq!(alice.name, "alice");
    assert!(!alice.disabled);
    assert_eq!(alice.failed_attempts, 0);
    assert_eq!(alice.last_login, None);
    let phc = alice.password_phc.clone().unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(verify_password(&phc, b"correct horse"));

    // "Alice" and "alice" are one account.
    assert_eq!(store.get("ALICE").unwrap().unwrap(), alice);
    assert!(matches!(
        store.add_user("alice", None, &[key(1)]),
        Err(StoreError::Exists(n)) if n == "alice"
    ));
    assert!(matches!(
        store.add_user("-bad", None, &[]),
        Err(StoreError::InvalidName(_))
    ));
    assert!(matches!(
        store.add_user("bob", Some(b"short"), &[]),
        Err(StoreError::WeakPassword(_))
    ));
    assert!(store.get("bob").unwrap().is_none(), "nothing half-created");

    store.add_user("bob", None, &[key(1)]).unwrap();
    let names: Vec<_> = store.list().unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["alice", "bob"]);

    store.set_disabled("ALICE", true).unwrap();
    assert!(store.get("alice").unwrap().unwrap().disabled);
    store.set_disabled("alice", false).unwrap();
    assert!(!store.get("alice").unwrap().unwrap().disabled);

    store.set_password("alice", b"battery staple").unwrap();
    let phc2 = store.get("alice").unwrap().unwrap().password_phc.unwrap();
    assert!(verify_password(&phc2, b"battery staple"));
    assert!(!verify_password(&phc2, b"correct horse"));
    assert!(matches!(
        store.set_password("alice", b"alice"),
        Err(StoreError::WeakPassword(_))
    ));

    store.record_failure("alice").unwrap();
    store.record_failure("alice").unwrap();
    assert_eq!(store.get("alice").unwrap().unwrap().failed_attempts, 2);
    store.reset_failures("alice").unwrap();
    assert_eq!(store.get("alice").unwrap().unwrap().failed_attempts, 0);
    store.record_failure("alice").unwrap();
    store.record_login("alice", 1_700_000_000).unwrap();
    let a = store.get("alice").unwrap().unwrap();
    assert_eq!(a.last_login, Some(1_700_000_000));
    assert_eq!(a.failed_attempts, 0);
    assert!(matches!(
        store.record_failure("nobody"),
        Err(StoreError::NotFound(_))
    ));

    store.remove_user("Bob").unwrap();
    assert!(store.get("bob").unwrap().is_none());
    assert!(matches!(
        store.set_disabled("bob", true),
        Err(StoreError::NotFound(_))
    ));

    // Everything survives a reopen.
    let store = reopen();
    let names: Vec<_> = store.list().unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["alice"]);
}

/// Adding and removing keys.
pub fn keys_add_and_remove(store: &dyn AccountStore) {
    store.add_user("carol", None, &[key(1)]).unwrap();
    store.add_key("Carol", &key(2)).unwrap();
    assert_eq!(store.get("carol").unwrap().unwrap().keys, [key(1), key(2)]);
    assert!(matches!(
        store.add_key("carol", &key(2)),
        Err(StoreError::KeyExists(_))
    ));
    store.remove_key("carol", &key(1).fingerprint()).unwrap();
    assert_eq!(store.get("carol").unwrap().unwrap().keys, [key(2)]);
    assert!(matches!(
        store.remove_key("carol", &key(1).fingerprint()),
        Err(StoreError::NoSuchKey(_))
    ));
    assert!(matches!(
        store.add_key("nobody", &key(3)),
        Err(StoreError::NotFound(_))
    ));
}

/// Two writers (two servers of a fleet, or two pool threads) register the same names
/// at once: for each name exactly one wins and the other gets [`StoreError::Exists`].
pub fn registration_race(a: Arc<dyn AccountStore>, b: Arc<dyn AccountStore>) {
    const NAMES: usize = 8;
    let run = |store: Arc<dyn AccountStore>| {
        std::thread::spawn(move || {
            (0..NAMES)
                .map(
                    |i| match store.add_user(&format!("racer{i}"), None, &[key(1)]) {
                        Ok(_) => true,
                        Err(StoreError::Exists(_)) => false,
                        Err(e) => panic!("racer{i}: {e}"),
                    },
                )
                .collect::<Vec<bool>>()
        })
    };
    let (ta, tb) = (run(a.clone()), run(b));
    let (wa, wb) = (ta.join().unwrap(), tb.join().unwrap());
    for i in 0..NAMES {
        assert!(wa[i] ^ wb[i], "racer{i}: exactly one registration must win");
    }
    assert_eq!(a.list().unwrap().len(), NAMES);
}

/// The key cap holds.
pub fn key_cap(store: &dyn AccountStore) {
    let keys: Vec<PublicKey> = (0..MAX_KEYS_PER_ACCOUNT)
        .map(|i| key(i as u8 + 10))
        .collect();
    store.add_user("many", None, &keys).unwrap();
    assert!(matches!(
        store.add_key("many", &key(200)),
        Err(StoreError::TooManyKeys(_))
    ));
    assert_eq!(store.get("many").unwrap().unwrap().keys, keys);
}
