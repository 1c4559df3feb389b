//! Compressed chunks of samples, in the manner of Prometheus's XOR chunks (Gorilla, Pelkonen et
//! al., VLDB 2015): timestamps as deltas of deltas in variable-width buckets, values as the XOR
//! with the previous value, both bit-packed.
//!
//! A chunk holds at most [`CHUNK_SAMPLES`] samples in ascending time order. Its first time is kept
//! outside the bits (`min_t`), its first value as 64 raw bits; every later sample is
//!
//! - the delta of delta of its time (`dod`, in ms; the previous delta is 0 before the second
//!   sample): `0` when 0, `10` + 14 bits, `110` + 17 bits, `1110` + 20 bits (two's complement,
//!   when it fits), else `1111` + 64 bits;
//! - the XOR of its value's bits with the previous value's: `0` when equal, else `1` and either
//!   `0` + the meaningful bits when they fit in the previous window of leading and trailing zero
//!   bits, or `1` + 5 bits of leading zeros + 6 bits of meaningful-bit count (64 as 0) + the
//!   meaningful bits.
//!
//! Arithmetic on times wraps, so any `i64` times round-trip (the store only appends strictly
//! increasing ones); values round-trip bit for bit, so every NaN, the staleness marker among
//! them, comes back as it went in.

use observastack_promql::Sample;

/// The most samples in a chunk (as Prometheus: 120, two minutes at a 1 s scrape interval).
pub(crate) const CHUNK_SAMPLES: u16 = 120;

/// The open chunk of a series: appended to in place.
#[derive(Default)]
pub(crate) struct Head {
    bits: Vec<u8>,
    /// Bits written (the last byte may be partly used).
    len: u32,
    count: u16,
    min_t: i64,
    max_t: i64,
    prev_delta: i64,
    prev_v: u64,
    /// The XOR window: leading zeros (0xff: none yet) and trailing zeros.
    leading: u8,
    trailing: u8,
}

/// A full chunk, no longer appended to.
pub(crate) struct Closed {
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) count: u16,
    bits: Box<[u8]>,
}

impl Head {
    #[cfg(test)]
    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn min_t(&self) -> i64 {
        self.min_t
    }

    pub(crate) fn max_t(&self) -> i64 {
        self.max_t
    }

    pub(crate) fn is_full(&self) -> bool {
        self.count >= CHUNK_SAMPLES
    }

    /// Appends one sample; the caller keeps times ascending and the chunk not full.
    pub(crate) fn push(&mut self, t: i64, v: f64) {
        let v = v.to_bits();
        if self.count == 0 {
            self.bits.reserve_exact(24);
            self.min_t = t;
            self.prev_delta = 0;
            self.leading = 0xff;
            self.trailing = 0;
            self.write(v, 64);
        } else {
            let delta = t.wrapping_sub(self.max_t);
            let dod = delta.wrapping_sub(self.prev_delta);
            self.write_dod(dod);
            self.prev_delta = delta;
            self.write_xor(v ^ self.prev_v);
        }
        self.max_t = t;
        self.prev_v = v;
        self.count += 1;
    }

    fn write_dod(&mut self, dod: i64) {
        let fits = |n: u32| dod >= -(1 << (n - 1)) && dod < (1 << (n - 1));
        if dod == 0 {
            self.write(0, 1);
        } else if fits(14) {
            self.write(0b10, 2);
            self.write(dod as u64, 14);
        } else if fits(17) {
            self.write(0b110, 3);
            self.write(dod as u64, 17);
        } else if fits(20) {
            self.write(0b1110, 4);
            self.write(dod as u64, 20);
        } else {
            self.write(0b1111, 4);
            self.write(dod as u64, 64);
        }
    }

    fn write_xor(&mut self, xor: u64) {
        if xor == 0 {
            self.write(0, 1);
            return;
        }
        let leading = xor.leading_zeros().min(31) as u8;
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            self.write(0b10, 2);
            self.write(xor >> self.trailing, sig);
        } else {
            let sig = 64 - u32::from(leading) - u32::from(trailing);
            self.write(0b11, 2);
            self.write(u64::from(leading), 5);
            // 64 meaningful bits (only when the XOR has its top and bottom bits set) as 0.
            self.write(u64::from(sig & 63), 6);
            self.write(xor >> trailing, sig);
            self.leading = leading;
            self.trailing = trailing;
        }
    }

    /// Writes the low `n` bits of `value`, most significant first.
    fn write(&mut self, value: u64, mut n: u32) {
        while n > 0 {
            let used = self.len % 8;
            if used == 0 {
                self.bits.push(0);
            }
            let free = 8 - used;
            let take = free.min(n);
            let chunk = (value >> (n - take)) & ((1u64 << take) - 1);
            if let Some(last) = self.bits.last_mut() {
                *last |= (chunk as u8) << (free - take);
            }
            self.len += take;
            n -= take;
        }
    }

    /// The samples, decoded.
    pub(crate) fn iter(&self) -> Decoder<'_> {
        Decoder::new(&self.bits, self.min_t, self.count)
    }

    /// Closes the chunk: its bits shrink to their length and the head is empty again.
    pub(crate) fn close(&mut self) -> Closed {
        let head = std::mem::take(self);
        Closed {
            min_t: head.min_t,
            max_t: head.max_t,
            count: head.count,
            bits: head.bits.into_boxed_slice(),
        }
    }

    /// Drops the samples before `horizon` (re-encoding the rest); returns how many went.
    pub(crate) fn trim_before(&mut self, horizon: i64) -> usize {
        if self.count == 0 || self.min_t >= horizon {
            return 0;
        }
        let before = usize::from(self.count);
        let kept: Vec<Sample> = self.iter().filter(|s| s.t_ms >= horizon).collect();
        *self = Head::default();
        for s in &kept {
            self.push(s.t_ms, s.value);
        }
        before - kept.len()
    }
}

impl Closed {
    /// The samples, decoded.
    pub(crate) fn iter(&self) -> Decoder<'_> {
        Decoder::new(&self.bits, self.min_t, self.count)
    }

    /// Bytes of encoded samples.
    #[cfg(test)]
    pub(crate) fn encoded_len(&self) -> usize {
        self.bits.len()
    }
}

/// Decodes a chunk's samples in order.
pub(crate) struct Decoder<'a> {
    bits: &'a [u8],
    pos: usize,
    left: u16,
    first: bool,
    t: i64,
    delta: i64,
    v: u64,
    leading: u32,
    trailing: u32,
}

impl<'a> Decoder<'a> {
    fn new(bits: &'a [u8], min_t: i64, count: u16) -> Self {
        Self {
            bits,
            pos: 0,
            left: count,
            first: true,
            t: min_t,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
        }
    }

    fn bit(&mut self) -> bool {
        let byte = self.bits.get(self.pos / 8).copied().unwrap_or(0);
        let b = ((byte >> (7 - self.pos % 8)) & 1) == 1;
        self.pos += 1;
        b
    }

    /// Reads `n` bits (at most 64), most significant first.
    fn read(&mut self, mut n: u32) -> u64 {
        let mut out: u64 = 0;
        while n > 0 {
            let used = (self.pos % 8) as u32;
            let avail = 8 - used;
            let take = avail.min(n);
            let byte = u64::from(self.bits.get(self.pos / 8).copied().unwrap_or(0));
            let chunk = (byte >> (avail - take)) & ((1u64 << take) - 1);
            out = (out << take) | chunk;
            self.pos += take as usize;
            n -= take;
        }
        out
    }

    /// Reads an `n`-bit two's complement number.
    fn read_signed(&mut self, n: u32) -> i64 {
        let raw = self.read(n);
        if n == 64 {
            raw as i64
        } else {
            ((raw << (64 - n)) as i64) >> (64 - n)
        }
    }

    fn read_dod(&mut self) -> i64 {
        if !self.bit() {
            0
        } else if !self.bit() {
            self.read_signed(14)
        } else if !self.bit() {
            self.read_signed(17)
        } else if !self.bit() {
            self.read_signed(20)
        } else {
            self.read_signed(64)
        }
    }
}

impl Iterator for Decoder<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if self.first {
            self.first = false;
            self.v = self.read(64);
        } else {
            let dod = self.read_dod();
            self.delta = self.delta.wrapping_add(dod);
            self.t = self.t.wrapping_add(self.delta);
            if self.bit() {
                if self.bit() {
                    self.leading = self.read(5) as u32;
                    let sig = match self.read(6) as u32 {
                        0 => 64,
                        n => n,
                    };
                    self.trailing = 64 - self.leading - sig;
                }
                let sig = 64 - self.leading - self.trailing;
                self.v ^= self.read(sig) << self.trailing;
            }
        }
        Some(Sample {
            t_ms: self.t,
            value: f64::from_bits(self.v),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

#[cfg(test)]
mod tests {
    use observastack_promql::{STALE_NAN_BITS, stale_nan};
    use proptest::prelude::*;

    use super::*;

    /// Encodes `samples` into one head and decodes them back, as (time, value bits).
    fn round_trip(samples: &[(i64, u64)]) -> Vec<(i64, u64)> {
        let mut head = Head::default();
        for &(t, v) in samples {
            head.push(t, f64::from_bits(v));
        }
        assert_eq!(usize::from(head.count()), samples.len());
        let from_head: Vec<(i64, u64)> = head.iter().map(|s| (s.t_ms, s.value.to_bits())).collect();
        let closed = head.close();
        assert!(head.is_empty());
        let from_closed: Vec<(i64, u64)> = closed.iter().map(|s| (s.t_ms, s.value.to_bits())).collect();
        assert_eq!(from_head, from_closed);
        from_closed
    }

    #[test]
    fn edge_values_round_trip_bit_for_bit() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f64::NAN,
            -f64::NAN,
            stale_nan(),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            5e-324,
            f64::from_bits(u64::MAX),
            f64::from_bits(1),
            f64::from_bits(0x8000_0000_0000_0001),
            stale_nan(),
            stale_nan(),
            0.1,
            0.2,
            0.30000000000000004,
        ];
        let samples: Vec<(i64, u64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (1_700_000_000_000 + i as i64 * 1000, v.to_bits()))
            .collect();
        assert_eq!(round_trip(&samples), samples);
        let stale: Vec<_> = round_trip(&samples)
            .into_iter()
            .filter(|&(_, v)| v == STALE_NAN_BITS)
            .collect();
        assert_eq!(stale.len(), 3);
    }

    #[test]
    fn every_xor_width_round_trips() {
        // XORs with their meaningful bits at every position and of every width, 64 included.
        let mut samples = vec![(0, 0u64)];
        let mut v = 0u64;
        let mut t = 0;
        for lead in 0..64u32 {
            for width in [1u32, 2, 7, 31, 63, 64] {
                if lead + width > 64 {
                    continue;
                }
                let mask = if width == 64 {
                    u64::MAX
                } else {
                    ((1u64 << width) - 1) << (64 - lead - width)
                };
                v ^= mask;
                t += 1;
                samples.push((t, v));
            }
        }
        assert_eq!(round_trip(&samples), samples);
    }

    #[test]
    fn every_delta_bucket_round_trips() {
        let deltas = [
            1,
            1000,
            1000,
            8191 + 1000,
            1000,
            -8192 + 1000,
            65_535 + 1000,
            -65_536 + 1000,
            524_287 + 1000,
            -524_288 + 1000,
            1000 + 524_288,
            1000 - 524_289,
            86_400_000,
            1,
            i64::MAX / 4,
            1,
        ];
        let mut t = -5_000_000i64;
        let mut samples = vec![(t, 0)];
        for d in deltas {
            t = t.wrapping_add(d);
            samples.push((t, 42f64.to_bits()));
        }
        assert_eq!(round_trip(&samples), samples);
        // Extremes: wrapping arithmetic round-trips any times.
        let extremes = [(i64::MIN, 1), (0, 2), (i64::MAX, 3), (i64::MIN, 4), (-1, 5)];
        assert_eq!(round_trip(&extremes), extremes);
    }

    #[test]
    fn a_regular_counter_compresses_to_a_few_bits_a_sample() {
        let mut head = Head::default();
        for i in 0..i64::from(CHUNK_SAMPLES) {
            head.push(1_700_000_000_000 + i * 1000, (i * 7) as f64);
        }
        assert!(head.is_full());
        let closed = head.close();
        // 8 bytes of first value, then ~1 bit of time and a dozen bits of value a sample.
        assert!(closed.encoded_len() < 300, "{} bytes", closed.encoded_len());
        assert_eq!(closed.count, CHUNK_SAMPLES);
        assert_eq!((closed.min_t, closed.max_t), (1_700_000_000_000, 1_700_000_119_000));
    }

    #[test]
    fn trimming_the_head_keeps_the_newer_samples() {
        let mut head = Head::default();
        for i in 0..10 {
            head.push(i * 1000, i as f64);
        }
        assert_eq!(head.trim_before(0), 0);
        assert_eq!(head.trim_before(4500), 5);
        let kept: Vec<_> = head.iter().map(|s| (s.t_ms, s.value)).collect();
        assert_eq!(kept, (5..10).map(|i| (i * 1000, i as f64)).collect::<Vec<_>>());
        assert_eq!((head.min_t(), head.max_t(), head.count()), (5000, 9000, 5));
        head.push(10_000, 10.0);
        assert_eq!(head.iter().last().map(|s| s.t_ms), Some(10_000));
        assert_eq!(head.trim_before(20_000), 6);
        assert!(head.is_empty());
    }

    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            any::<f64>().prop_map(f64::to_bits),
            (-1000i32..1000).prop_map(|i| f64::from(i).to_bits()),
            Just(STALE_NAN_BITS),
            Just(f64::NAN.to_bits()),
            Just(0),
            Just((-0.0f64).to_bits()),
            Just(f64::INFINITY.to_bits()),
        ]
    }

    fn delta() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(1000i64),
            990i64..1010,
            1i64..100_000,
            1i64..(1 << 40),
            any::<i64>(),
        ]
    }

    proptest! {
        #[test]
        fn any_samples_round_trip(
            start in any::<i64>(),
            steps in proptest::collection::vec((delta(), value()), 0..usize::from(CHUNK_SAMPLES)),
            first in value(),
        ) {
            let mut t = start;
            let mut samples = vec![(t, first)];
            for (d, v) in steps {
                t = t.wrapping_add(d);
                samples.push((t, v));
            }
            prop_assert_eq!(round_trip(&samples), samples);
        }
    }
}
