//! RFC 9162 §2.1 Merkle tree hashing (the Certificate Transparency v2 tree), pure.
//!
//! - leaf hash: `SHA-256(0x00 ‖ leaf)`; interior node: `SHA-256(0x01 ‖ left ‖ right)`;
//! - the empty tree: `SHA-256("")`;
//! - a tree of `n > 1` leaves splits at `k`, the largest power of two smaller than `n`.
//!
//! In annals a leaf is an event's 32-byte chain hash, in seq order: leaf `i` of a partition's
//! tree is the event with seq `i`.
//!
//! Generation ([`root`], [`inclusion_proof`], [`consistency_proof`]) works on a slice of leaf
//! hashes; verification ([`root_from_inclusion_proof`], [`verify_inclusion`],
//! [`verify_consistency`]) follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The byte a leaf's hash input starts with.
pub const LEAF_TAG: u8 = 0x00;
/// The byte an interior node's hash input starts with.
pub const NODE_TAG: u8 = 0x01;

/// `SHA-256(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_TAG]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_TAG]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (`n >= 2`): where a tree of `n` leaves splits.
pub fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The Merkle tree hash (root) of `leaves`, which are leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Why a proof cannot be generated: the arguments are outside the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfRange(pub String);

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutOfRange {}

/// The inclusion proof (audit path) of leaf `index` in the tree of the first `size` leaves
/// (RFC 9162 §2.1.3.1), ordered from the leaf up.
pub fn inclusion_proof(leaves: &[Hash], index: u64, size: u64) -> Result<Vec<Hash>, OutOfRange> {
    if size > leaves.len() as u64 || index >= size {
        return Err(OutOfRange(format!(
            "leaf {index} is not in a tree of size {size} ({} leaves known)",
            leaves.len()
        )));
    }
    let mut path = Vec::new();
    inclusion_path(index as usize, &leaves[..size as usize], &mut path);
    Ok(path)
}

fn inclusion_path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        inclusion_path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        inclusion_path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// The consistency proof between the trees of the first `old_size` and `new_size` leaves
/// (RFC 9162 §2.1.4.1). Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof(
    leaves: &[Hash],
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, OutOfRange> {
    if new_size > leaves.len() as u64 || old_size > new_size {
        return Err(OutOfRange(format!(
            "no consistency proof from size {old_size} to size {new_size} ({} leaves known)",
            leaves.len()
        )));
    }
    let mut path = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(
            old_size as usize,
            &leaves[..new_size as usize],
            true,
            &mut path,
        );
    }
    Ok(path)
}

fn subproof(m: usize, d: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split(n as u64) as usize;
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The index or sizes are impossible (index past the tree, old size after new size, ...).
    BadArguments(String),
    /// The path has the wrong number of hashes for these sizes.
    WrongLength,
    /// The path leads to another root.
    RootMismatch,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProofError::BadArguments(s) => f.write_str(s),
            ProofError::WrongLength => f.write_str("the path has the wrong number of hashes"),
            ProofError::RootMismatch => f.write_str("the path does not lead to the root"),
        }
    }
}

impl std::error::Error for ProofError {}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1–6 without the final
/// comparison).
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::BadArguments(format!(
            "leaf index {index} is not below the tree size {size}"
        )));
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(r)
}

/// Verifies that `leaf` (a leaf hash) is leaf `index` of the tree of `size` leaves with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion_proof(index, size, leaf, path)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of `old_size` leaves with `old_root` is a prefix of the tree of
/// `new_size` leaves with `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::BadArguments(format!(
            "the old tree size {old_size} is after the new tree size {new_size}"
        )));
    }
    if old_size == new_size {
        if !path.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old_size == 0 {
        // Every tree extends the empty tree; only an empty path is well formed.
        if !path.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if *old_root == EMPTY_ROOT {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if path.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // Step 2: a power-of-two old tree is itself a node of the new one.
    let mut nodes: Vec<&Hash> = Vec::with_capacity(path.len() + 1);
    if old_size.is_power_of_two() {
        nodes.push(old_root);
    }
    nodes.extend(path.iter());
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut fr = *nodes[0];
    let mut sr = *nodes[0];
    for c in &nodes[1..] {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first. Gives
/// the root at the current size in `O(log n)` after each push, so a whole partition is
/// checkpointed or checked in one pass without keeping its leaves.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    stack: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.stack.push(leaf);
        self.size += 1;
        let mut s = self.size;
        while s & 1 == 0 {
            let right = self.stack.pop().expect("two subtrees to merge");
            let left = self.stack.pop().expect("two subtrees to merge");
            self.stack.push(node_hash(&left, &right));
            s >>= 1;
        }
    }

    /// Appends `2^height` leaves at once, given the root of the perfect tree over them:
    /// the same as pushing them one by one. The leaves pushed so far must be a multiple of
    /// `2^height` (so the subtree is one node of the whole tree); returns false, changing
    /// nothing, if they are not.
    pub fn push_subtree(&mut self, root: Hash, height: u32) -> bool {
        let width = 1u64 << height;
        if !self.size.is_multiple_of(width) {
            return false;
        }
        self.stack.push(root);
        self.size += width;
        let mut s = self.size >> height;
        while s & 1 == 0 {
            let right = self.stack.pop().expect("two subtrees to merge");
            let left = self.stack.pop().expect("two subtrees to merge");
            self.stack.push(node_hash(&left, &right));
            s >>= 1;
        }
        true
    }

    /// The root of the tree of every leaf pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(last) = it.next() else {
            return EMPTY_ROOT;
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split(n), k, "n = {n}");
        }
        assert_eq!(split(u64::MAX), 1 << 63);
    }

    #[test]
    fn the_frontier_agrees_with_the_recursive_root() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        assert_eq!(f.root(), EMPTY_ROOT);
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), root(&leaves[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn a_pushed_subtree_equals_its_leaves_pushed_one_by_one() {
        let leaves: Vec<Hash> = (0..100u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        // 3 leaves, then a misplaced subtree (refused), then 1 leaf and subtrees of 4, 8, 16.
        for l in &leaves[..3] {
            f.push(*l);
        }
        assert!(!f.push_subtree(root(&leaves[3..7]), 2));
        assert_eq!(f.size(), 3);
        f.push(leaves[3]);
        let mut at = 4;
        for height in [2, 3, 4] {
            let width = 1 << height;
            assert!(f.push_subtree(root(&leaves[at..at + width]), height as u32));
            at += width;
            assert_eq!(f.root(), root(&leaves[..at]), "size {at}");
        }
        for l in &leaves[at..] {
            f.push(*l);
        }
        assert_eq!(f.root(), root(&leaves));
    }
}
