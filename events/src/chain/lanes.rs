//! SHA-256 of many independent messages at once, for checks that hash a lot of small inputs
//! (`annals verify` re-hashes every event; checkpoint checks hash every Merkle leaf and node).
//!
//! One SHA-256 is a chain of dependent rounds, so a single message keeps the CPU's SHA unit
//! waiting on its own latency. Verification does not need the hashes one after another: each
//! stored event carries its own `prev_hash`, so every event can be re-hashed independently
//! and the links compared afterwards. [`Batch`] lays the messages out padded, and hashes
//! several of them side by side, one 64-byte block of each per step: 16 at a time in the
//! 16 lanes of AVX-512 registers where the CPU has AVX-512 (about 1.4 times the speed of
//! the SHA extensions here), else 4 at a time with the x86 SHA extensions, their rounds
//! interleaved. Without either it falls back to the `sha2` crate's block function, one
//! message at a time. Every path gives the same digests (tested against `sha2`).

use sha2::digest::generic_array::GenericArray;

use super::Hash;

/// SHA-256's initial state.
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The 64-byte blocks SHA-256 hashes for a message of `len` bytes: the message, the 0x80
/// byte and the 8-byte bit length, padded to a whole block.
pub fn padded_blocks(len: usize) -> usize {
    (len + 9).div_ceil(64)
}

/// Messages laid out back to back, each padded to whole 64-byte blocks as SHA-256 pads it.
#[derive(Default)]
pub struct Batch {
    blocks: Vec<u8>,
    /// Per message: its first byte in `blocks` and its block count.
    spans: Vec<(usize, usize)>,
    /// Per message: its length.
    lens: Vec<usize>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
        self.spans.clear();
        self.lens.clear();
    }

    /// Adds one message: the concatenation of `parts`.
    pub fn push(&mut self, parts: &[&[u8]]) {
        let start = self.blocks.len();
        let mut bits = 0u64;
        for p in parts {
            self.blocks.extend_from_slice(p);
            bits += 8 * p.len() as u64;
        }
        // Padding: 0x80, zeros, then the length in bits (big-endian) ending a block.
        self.blocks.push(0x80);
        let padded = 64 * padded_blocks((bits / 8) as usize);
        self.blocks.resize(start + padded - 8, 0);
        self.blocks.extend_from_slice(&bits.to_be_bytes());
        self.spans.push((start, padded / 64));
        self.lens.push((bits / 8) as usize);
    }

    /// Adds one message of a fixed size (a Merkle leaf or node): the padding is known in
    /// advance, so it is laid out in one go.
    pub fn push_array<const N: usize>(&mut self, message: &[u8; N]) {
        let blocks = padded_blocks(N);
        let start = self.blocks.len();
        self.blocks.resize(start + 64 * blocks, 0);
        let padded = &mut self.blocks[start..];
        padded[..N].copy_from_slice(message);
        padded[N] = 0x80;
        padded[64 * blocks - 8..].copy_from_slice(&(8 * N as u64).to_be_bytes());
        self.spans.push((start, blocks));
        self.lens.push(N);
    }

    /// Message `i`, as pushed.
    pub fn message(&self, i: usize) -> &[u8] {
        let start = self.spans[i].0;
        &self.blocks[start..start + self.lens[i]]
    }

    /// The digests of the messages, in the order they were pushed, into `out` (cleared first).
    pub fn digests(&self, out: &mut Vec<Hash>) {
        out.clear();
        out.resize(self.spans.len(), [0; 32]);
        #[cfg(target_arch = "x86_64")]
        if avx512::available() && self.blocks.len() <= i32::MAX as usize {
            // SAFETY: the CPU has AVX-512F and BW (checked just above), every span lies inside
            // `blocks` (built by `push`), and its offsets fit an i32 (checked above).
            unsafe { avx512::digests(&self.blocks, &self.spans, out) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if shani::available() {
            // SAFETY: the CPU has the SHA extensions and SSE4.1 (checked just above), and every
            // span lies inside `blocks` (built by `push`).
            unsafe { shani::digests(&self.blocks, &self.spans, out) };
            return;
        }
        self.portable_digests(out);
    }

    /// The same digests with the `sha2` crate's block function (any CPU).
    fn portable_digests(&self, out: &mut [Hash]) {
        for (&(start, n), digest) in self.spans.iter().zip(out.iter_mut()) {
            let mut state = IV;
            for block in self.blocks[start..start + 64 * n].chunks_exact(64) {
                sha2::compress256(&mut state, &[*GenericArray::from_slice(block)]);
            }
            *digest = to_bytes(&state);
        }
    }
}

/// SHA-256's round constants.
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

fn to_bytes(state: &[u32; 8]) -> Hash {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// The x86 SHA extensions, [`shani::LANES`] messages per step.
#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;

    use super::{Hash, IV, K, to_bytes};

    pub(super) const LANES: usize = 4;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("sha") && is_x86_feature_detected!("sse4.1")
    }

    /// A state in the layout the SHA instructions use: words (A, B, E, F) and (C, D, G, H).
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    /// Hashes every span of `blocks` into `out`: the messages in groups of [`LANES`], each
    /// group side by side, block by block. A message shorter than the others of its group
    /// leaves its lane hashing a block of zeros into a state nobody reads (a batch's messages
    /// are of similar length, so that is rare).
    ///
    /// # Safety
    /// The CPU must have the SHA extensions and SSE4.1, and every span must lie in `blocks`.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn digests(blocks: &[u8], spans: &[(usize, usize)], out: &mut [Hash]) {
        let initial = load(&IV);
        let idle = [0u8; 64];
        for (group, digests) in spans.chunks(LANES).zip(out.chunks_mut(LANES)) {
            let steps = group.iter().map(|s| s.1).max().unwrap_or(0);
            let mut states = [initial; LANES];
            let mut done = [initial; LANES];
            for step in 0..steps {
                let mut inputs = [idle.as_ptr(); LANES];
                for (input, &(start, n)) in inputs.iter_mut().zip(group) {
                    if step < n {
                        *input = blocks[start + 64 * step..start + 64 * (step + 1)].as_ptr();
                    }
                }
                // SAFETY: each input points at 64 readable bytes (a block of `blocks`, or `idle`).
                unsafe { compress(&mut states, &inputs) };
                for (i, &(_, n)) in group.iter().enumerate() {
                    if step + 1 == n {
                        done[i] = states[i];
                    }
                }
            }
            for ((digest, state), &(_, n)) in digests.iter_mut().zip(done).zip(group) {
                *digest = to_bytes(&store(if n == 0 { initial } else { state }));
            }
        }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load(words: &[u32; 8]) -> State {
        // SAFETY: `words` is 32 readable bytes; unaligned loads.
        let (dcba, hgfe) = unsafe {
            (
                _mm_loadu_si128(words.as_ptr().cast()),
                _mm_loadu_si128(words.as_ptr().add(4).cast()),
            )
        };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        State {
            abef: _mm_alignr_epi8(cdab, efgh, 8),
            cdgh: _mm_blend_epi16(efgh, cdab, 0xF0),
        }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store(s: State) -> [u32; 8] {
        let feba = _mm_shuffle_epi32(s.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(s.cdgh, 0xB1);
        let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
        let hgfe = _mm_alignr_epi8(dchg, feba, 8);
        let mut words = [0u32; 8];
        // SAFETY: `words` is 32 writable bytes; unaligned stores.
        unsafe {
            _mm_storeu_si128(words.as_mut_ptr().cast(), dcba);
            _mm_storeu_si128(words.as_mut_ptr().add(4).cast(), hgfe);
        }
        words
    }

    /// One 64-byte block into each state. The lanes' instructions are interleaved step by
    /// step, so the SHA unit works on one lane while another's round is still in flight.
    ///
    /// # Safety
    /// Each `inputs[i]` must point at 64 readable bytes.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress(states: &mut [State; LANES], inputs: &[*const u8; LANES]) {
        let big_endian = _mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203);
        let saved = *states;
        // The message schedule, four words per register, a ring of four registers per lane.
        let mut w = [[_mm_setzero_si128(); 4]; LANES];
        for (lane, input) in w.iter_mut().zip(inputs) {
            for (i, word) in lane.iter_mut().enumerate() {
                // SAFETY: the caller guarantees 64 readable bytes at `input`.
                let raw = unsafe { _mm_loadu_si128(input.add(16 * i).cast()) };
                *word = _mm_shuffle_epi8(raw, big_endian);
            }
        }
        for group in 0..16 {
            // SAFETY: `group < 16`, so the four constants lie inside `K`.
            let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * group).cast()) };
            for (s, w) in states.iter_mut().zip(w.iter_mut()) {
                // Four rounds: two per instruction, the state halves swapping roles.
                let wk = _mm_add_epi32(w[group % 4], k);
                s.cdgh = _mm_sha256rnds2_epu32(s.cdgh, s.abef, wk);
                s.abef = _mm_sha256rnds2_epu32(s.abef, s.cdgh, _mm_shuffle_epi32(wk, 0x0E));
                if group < 12 {
                    // W[t..t+4] from W[t-16..t-13], W[t-12..t-9], W[t-7..t-4], W[t-4..t-1].
                    let sigma0 = _mm_sha256msg1_epu32(w[group % 4], w[(group + 1) % 4]);
                    let shifted = _mm_alignr_epi8(w[(group + 3) % 4], w[(group + 2) % 4], 4);
                    w[group % 4] =
                        _mm_sha256msg2_epu32(_mm_add_epi32(sigma0, shifted), w[(group + 3) % 4]);
                }
            }
        }
        for (s, before) in states.iter_mut().zip(saved) {
            s.abef = _mm_add_epi32(s.abef, before.abef);
            s.cdgh = _mm_add_epi32(s.cdgh, before.cdgh);
        }
    }
}

/// AVX-512: 16 messages per step, one in each 32-bit lane of the registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Hash, IV, K};

    const LANES: usize = 16;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    /// Hashes every span of `blocks` into `out`, the messages in groups of [`LANES`] (see
    /// `shani::digests` for how shorter messages of a group are handled).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and BW, every span must lie in `blocks`, and `blocks` must
    /// be at most `i32::MAX` bytes long.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn digests(blocks: &[u8], spans: &[(usize, usize)], out: &mut [Hash]) {
        let initial: [__m512i; 8] = std::array::from_fn(|i| _mm512_set1_epi32(IV[i] as i32));
        for (group, digests) in spans.chunks(LANES).zip(out.chunks_mut(LANES)) {
            let steps = group.iter().map(|s| s.1).max().unwrap_or(0);
            let mut state = initial;
            let mut done = initial;
            for step in 0..steps {
                // Each lane's block at this step: a finished (or missing) lane re-reads its
                // group's first block, into a state nobody reads.
                let mut offsets = [group[0].0 as i32; LANES];
                let mut finishing = 0u16;
                for (lane, &(start, n)) in group.iter().enumerate() {
                    if step < n {
                        offsets[lane] = (start + 64 * step) as i32;
                    }
                    if step + 1 == n {
                        finishing |= 1 << lane;
                    }
                }
                // SAFETY: 16 i32s; every offset starts a whole block of `blocks`.
                unsafe {
                    let offsets = _mm512_loadu_si512(offsets.as_ptr().cast());
                    compress(&mut state, blocks.as_ptr(), offsets);
                }
                for (d, s) in done.iter_mut().zip(state) {
                    *d = _mm512_mask_mov_epi32(*d, finishing, s);
                }
            }
            // Transpose: word j of every lane, then each lane's eight words.
            let mut words = [[0u32; LANES]; 8];
            for (w, d) in words.iter_mut().zip(done) {
                // SAFETY: 16 writable u32s.
                unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), d) };
            }
            for (lane, digest) in digests.iter_mut().enumerate() {
                for (j, chunk) in digest.chunks_exact_mut(4).enumerate() {
                    chunk.copy_from_slice(&words[j][lane].to_be_bytes());
                }
            }
        }
    }

    /// One 64-byte block per lane, the block of lane `i` at `base + offsets[i]`.
    ///
    /// # Safety
    /// Each offset must point at 64 readable bytes from `base`.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compress(state: &mut [__m512i; 8], base: *const u8, offsets: __m512i) {
        let big_endian =
            _mm512_broadcast_i32x4(_mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203));
        let mut w = [_mm512_setzero_si512(); 16];
        for (t, word) in w.iter_mut().enumerate() {
            let at = _mm512_add_epi32(offsets, _mm512_set1_epi32(4 * t as i32));
            // SAFETY: the caller guarantees 64 readable bytes at every offset.
            let raw = unsafe { _mm512_i32gather_epi32::<1>(at, base.cast()) };
            *word = _mm512_shuffle_epi8(raw, big_endian);
        }
        let xor3 = |a, b, c| _mm512_ternarylogic_epi32::<0x96>(a, b, c);
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for (t, &k) in K.iter().enumerate() {
            if t >= 16 {
                let w15 = w[(t - 15) % 16];
                let w2 = w[(t - 2) % 16];
                let s0 = xor3(
                    _mm512_ror_epi32::<7>(w15),
                    _mm512_ror_epi32::<18>(w15),
                    _mm512_srli_epi32::<3>(w15),
                );
                let s1 = xor3(
                    _mm512_ror_epi32::<17>(w2),
                    _mm512_ror_epi32::<19>(w2),
                    _mm512_srli_epi32::<10>(w2),
                );
                let sum = _mm512_add_epi32(w[(t - 7) % 16], _mm512_add_epi32(s0, s1));
                w[t % 16] = _mm512_add_epi32(w[t % 16], sum);
            }
            let sigma1 = xor3(
                _mm512_ror_epi32::<6>(e),
                _mm512_ror_epi32::<11>(e),
                _mm512_ror_epi32::<25>(e),
            );
            let choose = _mm512_ternarylogic_epi32::<0xCA>(e, f, g);
            let kw = _mm512_add_epi32(_mm512_set1_epi32(k as i32), w[t % 16]);
            let t1 = _mm512_add_epi32(_mm512_add_epi32(h, sigma1), _mm512_add_epi32(choose, kw));
            let sigma0 = xor3(
                _mm512_ror_epi32::<2>(a),
                _mm512_ror_epi32::<13>(a),
                _mm512_ror_epi32::<22>(a),
            );
            let majority = _mm512_ternarylogic_epi32::<0xE8>(a, b, c);
            let t2 = _mm512_add_epi32(sigma0, majority);
            (h, g, f, e) = (g, f, e, _mm512_add_epi32(d, t1));
            (d, c, b, a) = (c, b, a, _mm512_add_epi32(t1, t2));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = _mm512_add_epi32(*s, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn expected(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    /// Every length around the padding boundaries, in batches that leave lanes idle.
    #[test]
    fn digests_equal_sha256_of_each_message() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 + 7) as u8).collect();
        for batch_len in [1, 2, 3, 4, 5, 7, 9, 33] {
            let mut batch = Batch::new();
            let mut want = Vec::new();
            for i in 0..batch_len {
                let len = (i * 37 + batch_len * 11) % 300;
                let (a, b) = data[i..i + len].split_at(len / 3);
                batch.push(&[a, b]);
                want.push(expected(&[a, b]));
            }
            let mut got = Vec::new();
            batch.digests(&mut got);
            assert_eq!(got, want, "batch of {batch_len}");
            for (path, got) in every_path(&batch) {
                assert_eq!(got, want, "{path}, batch of {batch_len}");
            }
        }
        for len in [
            0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 447, 448, 449,
        ] {
            let mut batch = Batch::new();
            batch.push(&[&data[..len]]);
            batch.push(&[&data[1..len + 1]]);
            let mut got = Vec::new();
            batch.digests(&mut got);
            assert_eq!(
                got,
                vec![expected(&[&data[..len]]), expected(&[&data[1..len + 1]])],
                "length {len}"
            );
        }
    }

    /// The digests by every path this CPU can run.
    fn every_path(batch: &Batch) -> Vec<(&'static str, Vec<Hash>)> {
        let mut paths = Vec::new();
        let mut out = vec![[0; 32]; batch.len()];
        batch.portable_digests(&mut out);
        paths.push(("portable", out.clone()));
        #[cfg(target_arch = "x86_64")]
        if shani::available() {
            // SAFETY: available, and the spans come from `push`.
            unsafe { shani::digests(&batch.blocks, &batch.spans, &mut out) };
            paths.push(("sha extensions", out.clone()));
        }
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            // SAFETY: available, and the spans come from `push`.
            unsafe { avx512::digests(&batch.blocks, &batch.spans, &mut out) };
            paths.push(("avx-512", out.clone()));
        }
        paths
    }

    /// Fixed-size messages (Merkle leaves and nodes) are laid out as `push` lays them out.
    #[test]
    fn push_array_lays_out_as_push() {
        fn both<const N: usize>(message: &[u8; N]) {
            let (mut a, mut b) = (Batch::new(), Batch::new());
            a.push(&[message]);
            a.push(&[&message[1..]]);
            b.push_array(message);
            b.push(&[&message[1..]]);
            assert_eq!(
                (&a.blocks, &a.spans, &a.lens),
                (&b.blocks, &b.spans, &b.lens)
            );
            assert_eq!(b.message(0), message);
            let mut got = Vec::new();
            b.digests(&mut got);
            assert_eq!(got[0], expected(&[message]), "{N} bytes");
        }
        both(&[7u8; 33]);
        both(&[8u8; 55]);
        both(&[9u8; 56]);
        both(&[1u8; 65]);
        both(&[2u8; 119]);
        both(&[3u8; 120]);
    }

    #[test]
    fn an_empty_batch_has_no_digests() {
        let mut got = vec![[1; 32]];
        Batch::new().digests(&mut got);
        assert!(got.is_empty());
    }
}
