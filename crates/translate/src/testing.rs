//! Test support: a small deterministic random generator, so failures reproduce.

/// xorshift64*: plenty for choosing chunk sizes and fragments.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `count` random picks from `pieces`, concatenated.
    pub(crate) fn text(&mut self, pieces: &[&str], count: usize) -> String {
        (0..count).map(|_| pieces[self.below(pieces.len())]).collect()
    }
}
