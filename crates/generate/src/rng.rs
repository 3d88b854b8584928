//! A small, stable PRNG for sampling: xoshiro256++ seeded through splitmix64.
//!
//! Its stream is fixed by this file alone (no dependency whose algorithm could
//! change), so a seed reproduces the same samples across versions and machines.
//! It is not torch's generator: for a given seed, encdec and transformers draw
//! from the same distribution but not the same numbers.

/// splitmix64 step: a good 64-bit mixer.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut s = [0u64; 4];
        for v in &mut s {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *v = splitmix64(x);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    /// The stream of (seed, source index, sample index): independent of batch
    /// composition and order, so batching never changes what is sampled.
    pub fn for_row(seed: u64, source: usize, sample: usize) -> Self {
        Rng::new(splitmix64(
            splitmix64(seed ^ 0x5EED) ^ splitmix64((source as u64) << 16 ^ sample as u64),
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}
