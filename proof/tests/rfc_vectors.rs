//! The RFC 6962 / RFC 9162 reference vectors: the eight standard test leaves, the root hashes of
//! their first 1..8 leaves, and the published inclusion and consistency proofs between them
//! (as used by google/certificate-transparency and transparency-dev/merkle). A tree that no
//! other implementation agrees with proves nothing to anyone else.

use annals_proof::merkle::{
    self, EMPTY_ROOT, Hash, consistency_proof, inclusion_proof, leaf_hash, root,
    root_from_inclusion_proof, verify_consistency, verify_inclusion,
};

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Root of the first `i + 1` leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, audit path).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, consistency path).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn hs(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

fn leaves() -> Vec<Hash> {
    LEAVES
        .iter()
        .map(|l| leaf_hash(&hex::decode(l).unwrap()))
        .collect()
}

#[test]
fn empty_tree_and_leaf_hashes() {
    assert_eq!(
        hex::encode(EMPTY_ROOT),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(root(&[]), EMPTY_ROOT);
    // The root of one leaf is its leaf hash: SHA-256(0x00 ‖ "").
    assert_eq!(leaf_hash(b""), h(ROOTS[0]));
}

#[test]
fn roots_of_the_first_n_reference_leaves() {
    let l = leaves();
    for n in 1..=8 {
        assert_eq!(hex::encode(root(&l[..n])), ROOTS[n - 1], "size {n}");
        let mut f = merkle::Frontier::new();
        l[..n].iter().for_each(|x| f.push(*x));
        assert_eq!(hex::encode(f.root()), ROOTS[n - 1], "frontier, size {n}");
    }
}

#[test]
fn reference_inclusion_proofs_are_generated_and_verify() {
    let l = leaves();
    for (index, size, path) in INCLUSION {
        let want = hs(path);
        assert_eq!(
            inclusion_proof(&l, index, size).unwrap(),
            want,
            "generated path of leaf {index} in size {size}"
        );
        let root = h(ROOTS[size as usize - 1]);
        verify_inclusion(index, size, &l[index as usize], &want, &root).unwrap();
        assert_eq!(
            root_from_inclusion_proof(index, size, &l[index as usize], &want).unwrap(),
            root
        );
    }
}

#[test]
fn reference_consistency_proofs_are_generated_and_verify() {
    let l = leaves();
    for (old, new, path) in CONSISTENCY {
        let want = hs(path);
        assert_eq!(
            consistency_proof(&l, old, new).unwrap(),
            want,
            "generated path {old} → {new}"
        );
        verify_consistency(
            old,
            new,
            &h(ROOTS[old as usize - 1]),
            &h(ROOTS[new as usize - 1]),
            &want,
        )
        .unwrap();
    }
}

#[test]
fn corrupted_reference_inclusion_proofs_are_rejected() {
    let l = leaves();
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, path) in INCLUSION {
        let path = hs(path);
        let root = h(ROOTS[size as usize - 1]);
        let leaf = l[index as usize];
        let mut probes: Vec<(u64, u64, Hash, Vec<Hash>, Hash, String)> = vec![
            (
                index.wrapping_sub(1),
                size,
                leaf,
                path.clone(),
                root,
                "index - 1".into(),
            ),
            (
                index + 1,
                size,
                leaf,
                path.clone(),
                root,
                "index + 1".into(),
            ),
            (
                index ^ 2,
                size,
                leaf,
                path.clone(),
                root,
                "index ^ 2".into(),
            ),
            (index, size * 2, leaf, path.clone(), root, "size * 2".into()),
            (index, size / 2, leaf, path.clone(), root, "size / 2".into()),
            (index, size, some, path.clone(), root, "wrong leaf".into()),
            (
                index,
                size,
                leaf,
                path.clone(),
                EMPTY_ROOT,
                "empty root".into(),
            ),
            (index, size, leaf, path.clone(), some, "random root".into()),
            (
                index,
                size,
                leaf,
                [path.clone(), vec![root]].concat(),
                root,
                "trailing root".into(),
            ),
            (
                index,
                size,
                leaf,
                [vec![root], path.clone()].concat(),
                root,
                "preceding root".into(),
            ),
        ];
        for i in 0..path.len() {
            let mut p = path.clone();
            p[i][0] ^= 8;
            probes.push((
                index,
                size,
                leaf,
                p,
                root,
                format!("bit flipped in path[{i}]"),
            ));
        }
        if !path.is_empty() {
            probes.push((
                index,
                size,
                leaf,
                path[..path.len() - 1].to_vec(),
                root,
                "removed".into(),
            ));
        }
        for (i, s, leaf, p, r, desc) in probes {
            if (i, s) == (index, size) && p == path && r == root && leaf == l[index as usize] {
                continue;
            }
            assert!(
                verify_inclusion(i, s, &leaf, &p, &r).is_err(),
                "leaf {index} of {size}: {desc} was accepted"
            );
        }
    }
}

#[test]
fn corrupted_reference_consistency_proofs_are_rejected() {
    for (old, new, path) in CONSISTENCY {
        let path = hs(path);
        if path.is_empty() {
            continue;
        }
        let r1 = h(ROOTS[old as usize - 1]);
        let r2 = h(ROOTS[new as usize - 1]);
        let wrong = h("abacaba000000000000000000000000000000000000000000060061e00123456");
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>, String)> = vec![
            (old - 1, new, r1, r2, path.clone(), "old - 1".into()),
            (old + 1, new, r1, r2, path.clone(), "old + 1".into()),
            (old ^ 2, new, r1, r2, path.clone(), "old ^ 2".into()),
            (old, new * 2, r1, r2, path.clone(), "new * 2".into()),
            (old, new / 2, r1, r2, path.clone(), "new / 2".into()),
            (old, new, wrong, r2, path.clone(), "wrong old root".into()),
            (old, new, r1, wrong, path.clone(), "wrong new root".into()),
            (old, new, r2, r1, path.clone(), "swapped roots".into()),
            (old, new, r1, r2, vec![], "empty path".into()),
            (
                old,
                new,
                r1,
                r2,
                [path.clone(), vec![r1]].concat(),
                "trailing old root".into(),
            ),
            (
                old,
                new,
                r1,
                r2,
                [path.clone(), vec![r2]].concat(),
                "trailing new root".into(),
            ),
            (
                old,
                new,
                r1,
                r2,
                [vec![r1], path.clone()].concat(),
                "preceding old root".into(),
            ),
            (
                old,
                new,
                r1,
                r2,
                [vec![path[0]], path.clone()].concat(),
                "preceding path[0]".into(),
            ),
            (
                old,
                new,
                r1,
                r2,
                path[..path.len() - 1].to_vec(),
                "truncated".into(),
            ),
        ];
        for i in 0..path.len() {
            let mut p = path.clone();
            p[i][0] ^= 16;
            probes.push((old, new, r1, r2, p, format!("bit flipped in path[{i}]")));
        }
        for (o, n, a, b, p, desc) in probes {
            assert!(
                verify_consistency(o, n, &a, &b, &p).is_err(),
                "{old} → {new}: {desc} was accepted"
            );
        }
    }
}

#[test]
fn trivial_consistency_cases() {
    let r = h(ROOTS[0]);
    // Same size: empty path and equal roots only.
    verify_consistency(3, 3, &r, &r, &[]).unwrap();
    assert!(verify_consistency(3, 3, &r, &EMPTY_ROOT, &[]).is_err());
    assert!(verify_consistency(3, 3, &r, &r, &[r]).is_err());
    // From the empty tree: only with its root and an empty path.
    verify_consistency(0, 5, &EMPTY_ROOT, &r, &[]).unwrap();
    assert!(verify_consistency(0, 5, &r, &r, &[]).is_err());
    assert!(verify_consistency(0, 5, &EMPTY_ROOT, &r, &[r]).is_err());
    // Back in time.
    assert!(verify_consistency(2, 1, &r, &r, &[]).is_err());
}
