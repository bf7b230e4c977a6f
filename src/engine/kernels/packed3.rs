//! Codes below 8 held in 3 bits: the 4-bit kernels' nibble bytes with the
//! top bit of each nibble (always 0 for such codes) dropped, so 8 nibble
//! bytes (16 codes) take 6 bytes. A byte `h·16 + l` becomes the 6-bit field
//! `h·8 + l`; field `j` of a group sits at bits `6j … 6j+5` of its 48-bit
//! little-endian word.
//!
//! The layout keeps the nibble order of whatever kernel the codes were laid
//! out for, so a layer is unpacked to nibbles just before that kernel runs
//! and every 4-bit kernel serves 3-bit layers unchanged. Unpacking is cheap
//! next to the kernels it feeds: with AVX-512 VBMI three instructions make
//! 64 nibble bytes (a byte permute spreads each group's 6 bytes over a
//! 64-bit lane, `vpmultishiftqb` cuts the eight 6-bit fields out, and a
//! 64-entry byte table turns each field into its nibble byte); AVX2 spreads
//! the fields with shifts and masks; a portable loop does the same on `u64`.

/// Nibble bytes per group.
pub const GROUP: usize = 8;
/// Packed bytes per group.
pub const GROUP_PACKED: usize = 6;

/// Packed bytes for `nibble_len` nibble bytes (the last group zero-padded).
pub fn packed_len(nibble_len: usize) -> usize {
    nibble_len.div_ceil(GROUP) * GROUP_PACKED
}

/// The 3-bit form of `nibbles`, or `None` if a code is 8 or more.
pub fn pack3(nibbles: &[u8]) -> Option<Vec<u8>> {
    if nibbles.iter().any(|&b| b & 0x88 != 0) {
        return None;
    }
    let mut out = Vec::with_capacity(packed_len(nibbles.len()));
    for group in nibbles.chunks(GROUP) {
        let word = group
            .iter()
            .enumerate()
            .fold(0u64, |w, (j, &b)| w | (field(b) << (6 * j)));
        out.extend_from_slice(&word.to_le_bytes()[..GROUP_PACKED]);
    }
    Some(out)
}

/// The 6-bit field of nibble byte `b` (both codes < 8).
fn field(b: u8) -> u64 {
    ((b & 7) | ((b >> 4) << 3)) as u64
}

/// `out` (nibble bytes) from `packed`, which holds at least
/// `packed_len(out.len())` bytes.
pub fn unpack3(packed: &[u8], out: &mut [u8]) {
    assert!(
        packed.len() >= packed_len(out.len()),
        "unpack3: {} packed bytes for {} nibble bytes",
        packed.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    {
        use super::direct_conv::{isa, Isa};
        match isa() {
            // SAFETY: AVX-512 F/BW/VBMI detected; lengths asserted above.
            Some(Isa::Avx512) if vbmi() => return unsafe { unpack3_vbmi(packed, out) },
            // SAFETY: AVX2 detected (`isa`); lengths asserted above.
            Some(_) => return unsafe { unpack3_avx2(packed, out) },
            None => {}
        }
    }
    unpack3_portable(packed, out)
}

/// AVX-512 with the byte permutes and `vpmultishiftqb` (Ice Lake and
/// later, Zen 4): what the 3-bit bodies here and in `lowbit_linear` need.
#[cfg(target_arch = "x86_64")]
pub fn vbmi() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vbmi")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn vbmi() -> bool {
    false
}

/// Nibble bytes from one group's 48-bit word: fields to bytes (a 3-step
/// spread, 48 → 2×24 → 4×12 → 8×6 bits), then each byte's high 3 bits up
/// one place. The AVX2 body does the same steps on four words at once.
#[inline]
fn spread(w: u64) -> u64 {
    let w = (w & 0xFF_FFFF) | ((w << 8) & 0x00FF_FFFF_0000_0000);
    let w = (w & 0x0000_0FFF_0000_0FFF) | ((w << 4) & 0x0FFF_0000_0FFF_0000);
    let w = (w & 0x003F_003F_003F_003F) | ((w << 2) & 0x3F00_3F00_3F00_3F00);
    (w & 0x0707_0707_0707_0707) | ((w << 1) & 0x7070_7070_7070_7070)
}

#[doc(hidden)]
pub fn unpack3_portable(packed: &[u8], out: &mut [u8]) {
    for (group, src) in out.chunks_mut(GROUP).zip(packed.chunks(GROUP_PACKED)) {
        let mut word = [0u8; 8];
        word[..GROUP_PACKED].copy_from_slice(src);
        let bytes = spread(u64::from_le_bytes(word)).to_le_bytes();
        group.copy_from_slice(&bytes[..group.len()]);
    }
}

/// # Safety
/// AVX2 present; `packed.len() ≥ packed_len(out.len())`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[doc(hidden)]
pub unsafe fn unpack3_avx2(packed: &[u8], out: &mut [u8]) {
    use std::arch::x86_64::*;
    // 4 groups (24 packed bytes → 32 nibble bytes) per step; each 128-bit
    // half takes two groups' 12 bytes, spread to its two 64-bit lanes.
    let whole = out.len() / 32;
    // The upper half loads bytes 8..24 of the step, so neither load reads
    // past it: its groups sit at offsets 4 and 10.
    let spread_idx = _mm256_setr_epi8(
        0, 1, 2, 3, 4, 5, -1, -1, 6, 7, 8, 9, 10, 11, -1, -1, //
        4, 5, 6, 7, 8, 9, -1, -1, 10, 11, 12, 13, 14, 15, -1, -1,
    );
    let m24 = _mm256_set1_epi64x(0xFF_FFFF);
    let m24h = _mm256_set1_epi64x(0x00FF_FFFF_0000_0000);
    let m12 = _mm256_set1_epi64x(0x0000_0FFF_0000_0FFF);
    let m12h = _mm256_set1_epi64x(0x0FFF_0000_0FFF_0000);
    let m6 = _mm256_set1_epi64x(0x003F_003F_003F_003F);
    let m6h = _mm256_set1_epi64x(0x3F00_3F00_3F00_3F00);
    let m3 = _mm256_set1_epi64x(0x0707_0707_0707_0707);
    let m3h = _mm256_set1_epi64x(0x7070_7070_7070_7070);
    // One step of `spread`: the low part kept, the high part shifted up.
    let stage = |w: __m256i, low: __m256i, high: __m256i, by: i32| {
        let up = _mm256_sll_epi64(w, _mm_cvtsi32_si128(by));
        _mm256_or_si256(_mm256_and_si256(w, low), _mm256_and_si256(up, high))
    };
    for s in 0..whole {
        let src = packed.as_ptr().add(24 * s);
        let lo = _mm_loadu_si128(src as *const __m128i);
        let hi = _mm_loadu_si128(src.add(8) as *const __m128i);
        let v = _mm256_shuffle_epi8(_mm256_set_m128i(hi, lo), spread_idx);
        let w = stage(v, m24, m24h, 8);
        let w = stage(w, m12, m12h, 4);
        let w = stage(w, m6, m6h, 2);
        let w = stage(w, m3, m3h, 1);
        _mm256_storeu_si256(out.as_mut_ptr().add(32 * s) as *mut __m256i, w);
    }
    unpack3_portable(&packed[24 * whole..], &mut out[32 * whole..]);
}

/// # Safety
/// AVX-512 F, BW and VBMI present; `packed.len() ≥ packed_len(out.len())`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
#[doc(hidden)]
pub unsafe fn unpack3_vbmi(packed: &[u8], out: &mut [u8]) {
    use std::arch::x86_64::*;
    // 8 groups (48 packed bytes → 64 nibble bytes) per step.
    let spread_idx = _mm512_set_epi64(
        0x0000_2F2E_2D2C_2B2A,
        0x0000_2928_2726_2524,
        0x0000_2322_2120_1F1E,
        0x0000_1D1C_1B1A_1918,
        0x0000_1716_1514_1312,
        0x0000_1110_0F0E_0D0C,
        0x0000_0B0A_0908_0706,
        0x0000_0504_0302_0100,
    );
    // Field j of each 64-bit lane starts at bit 6j.
    let shifts = _mm512_set1_epi64(0x2A24_1E18_120C_0600);
    let table: [u8; 64] = std::array::from_fn(|f| ((f & 7) | ((f >> 3) << 4)) as u8);
    let table = _mm512_loadu_si512(table.as_ptr() as *const _);
    let groups = out.len().div_ceil(GROUP);
    let mut g = 0;
    while g < groups {
        let n = (groups - g).min(8);
        let in_mask: __mmask64 = if n == 8 {
            (1 << 48) - 1
        } else {
            (1 << (6 * n)) - 1
        };
        let bytes_out = (out.len() - GROUP * g).min(64);
        let out_mask: __mmask64 = if bytes_out == 64 {
            !0
        } else {
            (1 << bytes_out) - 1
        };
        let src = packed.as_ptr().add(6 * g);
        // A whole 64-byte load where the input runs on past it.
        let v = if packed.len() >= 6 * g + 64 {
            _mm512_loadu_si512(src as *const _)
        } else {
            _mm512_maskz_loadu_epi8(in_mask, src as *const i8)
        };
        let v = _mm512_permutexvar_epi8(spread_idx, v);
        let v = _mm512_multishift_epi64_epi8(shifts, v);
        // The table reads each byte's low 6 bits: the field.
        let v = _mm512_permutexvar_epi8(v, table);
        // Plain stores for whole blocks: a masked store cannot forward to
        // the kernel's loads that read the bytes right after.
        let dst = out.as_mut_ptr().add(GROUP * g);
        if bytes_out == 64 {
            _mm512_storeu_si512(dst as *mut _, v);
        } else {
            _mm512_mask_storeu_epi8(dst as *mut i8, out_mask, v);
        }
        g += 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nibbles(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((x >> 24) as u8) & 0x77
            })
            .collect()
    }

    #[test]
    fn portable_round_trips_every_length() {
        for len in 0..80 {
            let n = nibbles(len, len as u32);
            let p = pack3(&n).expect("codes < 8");
            assert_eq!(p.len(), packed_len(len));
            let mut back = vec![0xFF; len];
            unpack3_portable(&p, &mut back);
            assert_eq!(back, n, "length {len}");
        }
        assert!(pack3(&[0x08]).is_none() && pack3(&[0x80]).is_none());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_bodies_match_the_portable_one() {
        // Lengths around the AVX2 step (32 nibble bytes) and the VBMI step
        // (64), tails of every size.
        for len in (0..200).chain([1000, 4096 + 7]) {
            let n = nibbles(len, 7 + len as u32);
            let p = pack3(&n).expect("codes < 8");
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut out = vec![0xFF; len];
                // SAFETY: AVX2 checked; `p` is `packed_len(len)` bytes.
                unsafe { unpack3_avx2(&p, &mut out) };
                assert_eq!(out, n, "avx2, length {len}");
            }
            if vbmi() {
                let mut out = vec![0xFF; len];
                // SAFETY: VBMI checked; `p` is `packed_len(len)` bytes.
                unsafe { unpack3_vbmi(&p, &mut out) };
                assert_eq!(out, n, "vbmi, length {len}");
            }
        }
    }
}
