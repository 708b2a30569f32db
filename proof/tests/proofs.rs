//! Proof documents end to end: round trips over many tree shapes, and tampering with any byte
//! of a serialized proof is rejected.

use annals_proof::event::{event_hash, recompute};
use annals_proof::merkle::{
    Hash, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
};
use annals_proof::{
    Checkpoint, ConsistencyProof, InclusionProof, Proof, ProvenEvent, PublicKey,
    checkpoint_message, verify_document,
};
use ed25519_dalek::{Signer, SigningKey};

/// A small deterministic generator (no randomness crate needed in this crate's tests).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_inclusion_and_consistency_proof_round_trips_up_to_64_leaves() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let leaves: Vec<Hash> = (0..64)
        .map(|_| leaf_hash(&rng.next().to_le_bytes()))
        .collect();
    for size in 1..=64u64 {
        let r = root(&leaves[..size as usize]);
        for index in 0..size {
            let path = inclusion_proof(&leaves, index, size).unwrap();
            verify_inclusion(index, size, &leaves[index as usize], &path, &r).unwrap();
            // The same path for another leaf, size or root does not verify.
            let other = (index + 1) % size;
            if other != index {
                assert!(verify_inclusion(other, size, &leaves[index as usize], &path, &r).is_err());
            }
            assert!(
                verify_inclusion(index, size, &leaves[index as usize], &path, &leaves[0]).is_err()
                    || size == 1
            );
        }
        for old in 0..=size {
            let path = consistency_proof(&leaves, old, size).unwrap();
            let old_root = root(&leaves[..old as usize]);
            verify_consistency(old, size, &old_root, &r, &path).unwrap();
            if old > 0 && old < size {
                let mut bad = path.clone();
                bad[0][31] ^= 1;
                assert!(verify_consistency(old, size, &old_root, &r, &bad).is_err());
            }
        }
    }
    assert!(inclusion_proof(&leaves, 64, 64).is_err());
    assert!(inclusion_proof(&leaves, 0, 65).is_err());
    assert!(consistency_proof(&leaves, 5, 4).is_err());
}

// ---- a synthetic partition: canonical envelopes chained as annals writes them ----

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// The canonical envelope of event `seq` of `partition`, linked to `prev`.
fn envelope(partition: u32, seq: u64, prev: &Hash) -> Vec<u8> {
    let mut b = Vec::new();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&seq.to_be_bytes());
    id[8..12].copy_from_slice(&partition.to_be_bytes());
    b.extend_from_slice(&id);
    put_bytes(&mut b, b"acme");
    put_bytes(&mut b, format!("tenant/acme-{seq}").as_bytes());
    put_long(&mut b, 1);
    put_bytes(&mut b, b"tenancy.TenantArchived");
    put_long(&mut b, 5);
    put_long(&mut b, 1_700_000_000_000_000 + seq as i64);
    put_long(&mut b, 1_700_000_000_000_100 + seq as i64);
    put_bytes(&mut b, b"auditor");
    put_long(&mut b, 1);
    put_bytes(&mut b, b"cmd-1");
    put_long(&mut b, 0);
    put_bytes(&mut b, b"\x08acme");
    put_long(&mut b, i64::from(partition));
    put_long(&mut b, seq as i64);
    b.extend_from_slice(prev);
    let hash = event_hash(partition, seq, prev, &b);
    b.extend_from_slice(&hash);
    b
}

struct Partition {
    envelopes: Vec<Vec<u8>>,
    hashes: Vec<Hash>,
    leaves: Vec<Hash>,
}

fn partition(partition: u32, n: u64) -> Partition {
    let mut p = Partition {
        envelopes: vec![],
        hashes: vec![],
        leaves: vec![],
    };
    let mut prev = [0u8; 32];
    for seq in 0..n {
        let e = envelope(partition, seq, &prev);
        let (_, hash) = recompute(&e).unwrap();
        prev = hash;
        p.envelopes.push(e);
        p.hashes.push(hash);
        p.leaves.push(leaf_hash(&hash));
    }
    p
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn public() -> PublicKey {
    PublicKey::from_bytes(&key().verifying_key().to_bytes()).unwrap()
}

fn checkpoint(p: &Partition, partition: u32, size: u64) -> Checkpoint {
    let root_hash = root(&p.leaves[..size as usize]);
    let ts = 1_700_000_000_000_000 + size as i64;
    let msg = checkpoint_message("test-log", "events", partition, size, &root_hash, ts);
    Checkpoint {
        log_id: "test-log".into(),
        topic: "events".into(),
        partition,
        tree_size: size,
        root_hash,
        timestamp: ts,
        signature: key().sign(&msg).to_bytes(),
    }
}

fn inclusion(p: &Partition, partition: u32, seq: u64, size: u64) -> InclusionProof {
    let (fields, _) = recompute(&p.envelopes[seq as usize]).unwrap();
    InclusionProof {
        event: ProvenEvent {
            event_id: fields.event_id,
            topic: "events".into(),
            partition,
            seq,
            hash: p.hashes[seq as usize],
            envelope: p.envelopes[seq as usize].clone(),
        },
        leaf_hash: p.leaves[seq as usize],
        leaf_index: seq,
        tree_size: size,
        audit_path: inclusion_proof(&p.leaves, seq, size).unwrap(),
        checkpoint: checkpoint(p, partition, size),
    }
}

#[test]
fn signed_inclusion_proofs_verify_for_every_event_and_size() {
    let p = partition(3, 20);
    for size in 1..=20 {
        for seq in 0..size {
            let proof = inclusion(&p, 3, seq, size);
            let text = serde_json::to_string(&proof.to_json()).unwrap();
            let back = Proof::parse(&text).unwrap();
            assert_eq!(back, Proof::Inclusion(proof.clone()));
            let ok = verify_document(&text, &public()).unwrap();
            assert!(
                ok.to_string().contains(&format!("seq {seq} of events/3")),
                "{ok}"
            );
        }
    }
}

#[test]
fn signed_consistency_proofs_verify_between_any_two_checkpoints() {
    let p = partition(1, 17);
    for new in 1..=17 {
        for old in 1..=new {
            let proof = ConsistencyProof {
                old: checkpoint(&p, 1, old),
                new: checkpoint(&p, 1, new),
                path: consistency_proof(&p.leaves, old, new).unwrap(),
            };
            let text = serde_json::to_string(&proof.to_json()).unwrap();
            verify_document(&text, &public()).unwrap();
        }
    }
    // Checkpoints of two partitions are not consistent with each other.
    let q = partition(2, 17);
    let proof = ConsistencyProof {
        old: checkpoint(&q, 2, 5),
        new: checkpoint(&p, 1, 9),
        path: consistency_proof(&p.leaves, 5, 9).unwrap(),
    };
    assert_eq!(proof.verify(&public()).unwrap_err().what, "checkpoint");
}

/// Replaces byte `i` of `text` with a different character of the same class (another hex
/// digit for a hex digit, another digit for a digit, another letter for a letter, a letter for
/// punctuation), so the change is as plausible as a tamperer could make it.
fn flip(text: &str, i: usize) -> String {
    let mut b = text.as_bytes().to_vec();
    b[i] = match b[i] {
        b'0'..=b'8' => b[i] + 1,
        b'9' => b'0',
        b'a'..=b'e' => b[i] + 1,
        b'f' => b'a',
        b'g'..=b'y' => b[i] + 1,
        b'z' => b'g',
        b'A'..=b'Z' => b[i].to_ascii_lowercase(),
        _ => b'x',
    };
    String::from_utf8(b).unwrap()
}

#[test]
fn any_altered_byte_of_an_inclusion_proof_is_rejected() {
    let p = partition(0, 11);
    let proof = inclusion(&p, 0, 6, 11);
    let text = serde_json::to_string(&proof.to_json()).unwrap();
    verify_document(&text, &public()).unwrap();
    for i in 0..text.len() {
        let bad = flip(&text, i);
        assert!(
            verify_document(&bad, &public()).is_err(),
            "changing byte {i} ({:?}) was accepted: {}",
            &text[i.saturating_sub(10)..(i + 10).min(text.len())],
            bad
        );
        // Uppercasing a hex digit is refused too (one spelling per document).
        if text.as_bytes()[i].is_ascii_lowercase() {
            let mut up = text.as_bytes().to_vec();
            up[i] = up[i].to_ascii_uppercase();
            assert!(
                verify_document(std::str::from_utf8(&up).unwrap(), &public()).is_err(),
                "uppercase at {i}"
            );
        }
    }
}

#[test]
fn any_altered_byte_of_a_consistency_proof_is_rejected() {
    let p = partition(0, 13);
    let proof = ConsistencyProof {
        old: checkpoint(&p, 0, 5),
        new: checkpoint(&p, 0, 13),
        path: consistency_proof(&p.leaves, 5, 13).unwrap(),
    };
    let text = serde_json::to_string(&proof.to_json()).unwrap();
    verify_document(&text, &public()).unwrap();
    for i in 0..text.len() {
        let bad = flip(&text, i);
        assert!(
            verify_document(&bad, &public()).is_err(),
            "changing byte {i} was accepted: {bad}"
        );
    }
}

#[test]
fn failures_name_what_failed() {
    let p = partition(0, 9);
    let good = inclusion(&p, 0, 4, 9);
    let what = |proof: &InclusionProof| proof.verify(&public()).unwrap_err().what;

    let mut e = good.clone();
    let n = e.event.envelope.len();
    e.event.envelope[n - 40] ^= 1; // in prev_hash
    assert_eq!(what(&e), "event hash");

    let mut e = good.clone();
    e.event.envelope[20] ^= 1; // in the tenant
    assert_eq!(what(&e), "event hash");

    let mut e = good.clone();
    e.audit_path[1][0] ^= 1;
    assert_eq!(what(&e), "audit path");

    let mut e = good.clone();
    e.checkpoint.signature[10] ^= 1;
    assert_eq!(what(&e), "checkpoint signature");

    let mut e = good.clone();
    e.checkpoint.timestamp += 1;
    assert_eq!(what(&e), "checkpoint signature");

    let mut e = good.clone();
    e.checkpoint.root_hash[0] ^= 1;
    assert_eq!(what(&e), "audit path");

    // Another event's envelope with this proof's path.
    let mut e = good.clone();
    e.event = inclusion(&p, 0, 5, 9).event;
    assert_eq!(what(&e), "leaf hash");

    // The right document checked with another key.
    let other = PublicKey::from_bytes(
        &SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(
        good.verify(&other).unwrap_err().what,
        "checkpoint signature"
    );
}

#[test]
fn public_keys_are_read_as_hex_or_base64() {
    let k = key().verifying_key().to_bytes();
    let from_hex = PublicKey::parse(&format!("{}\n", hex::encode(k))).unwrap();
    assert_eq!(from_hex.to_bytes(), k);
    // Base64 of the same bytes (computed by hand: 3 bytes → 4 characters).
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for c in k.chunks(3) {
        let n = c.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - c.len()));
        for j in 0..4 {
            if j <= c.len() {
                b64.push(A[(n >> (18 - 6 * j)) as usize & 63] as char);
            } else {
                b64.push('=');
            }
        }
    }
    assert_eq!(PublicKey::parse(&b64).unwrap().to_bytes(), k);
    assert_eq!(PublicKey::parse("abcd").unwrap_err().what, "key");
}
