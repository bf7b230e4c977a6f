//! Bit-packed storage of integer codes: `bits` per code, LSB first, so 4-bit
//! codes take two per byte and 3-bit codes 8 per 3 bytes.

pub fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
    let bits = bits as usize;
    let mut out = vec![0u8; (codes.len() * bits).div_ceil(8)];
    let mask = ((1u16 << bits) - 1) as u8;
    for (i, &c) in codes.iter().enumerate() {
        let pos = i * bits;
        let v = (c & mask) as u16;
        let (byte, shift) = (pos / 8, pos % 8);
        out[byte] |= (v << shift) as u8;
        if shift + bits > 8 {
            out[byte + 1] |= (v >> (8 - shift)) as u8;
        }
    }
    out
}

pub fn unpack(bytes: &[u8], bits: u8, count: usize) -> Option<Vec<u8>> {
    let b = bits as usize;
    if !(1..=8).contains(&b) || bytes.len() < (count * b).div_ceil(8) {
        return None;
    }
    let mask = (1u16 << b) - 1;
    Some(
        (0..count)
            .map(|i| {
                let pos = i * b;
                let (byte, shift) = (pos / 8, pos % 8);
                let mut v = (bytes[byte] as u16) >> shift;
                if shift + b > 8 {
                    v |= (bytes[byte + 1] as u16) << (8 - shift);
                }
                (v & mask) as u8
            })
            .collect(),
    )
}

/// A quantized layer as stored: `ŵ[r, j] = scale[r]·(code[r, j] − zero[r]) / col_scale[c(j)]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantizedLayer {
    pub name: String,
    /// Bits per stored code (GPFQ's 2^b+1 levels need b+1).
    pub storage_bits: u8,
    pub codes: Vec<u8>,
    pub row_scale: Vec<f32>,
    pub row_zero: Vec<f32>,
    /// AWQ's per-input-channel scale (divides the dequantized weight).
    pub col_scale: Option<Vec<f32>>,
    /// Weight shape `[out, in, kh, kw]`.
    pub shape: [usize; 4],
}

impl QuantizedLayer {
    /// Codes from dequantized values known to lie on per-row grids.
    pub fn from_values(
        name: &str,
        q_scaled: &[f32],
        shape: [usize; 4],
        row_scale: Vec<f32>,
        row_zero: Vec<f32>,
        storage_bits: u8,
        col_scale: Option<Vec<f32>>,
    ) -> Self {
        let d = q_scaled.len() / shape[0].max(1);
        let maxc = ((1u32 << storage_bits) - 1) as f32;
        let codes = q_scaled
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let r = k / d.max(1);
                let s = row_scale[r];
                (if s == 0.0 {
                    row_zero[r]
                } else {
                    (v / s + row_zero[r]).round().clamp(0.0, maxc)
                }) as u8
            })
            .collect();
        QuantizedLayer {
            name: name.to_string(),
            storage_bits,
            codes,
            row_scale,
            row_zero,
            col_scale,
            shape,
        }
    }

    pub fn dequantize(&self) -> Vec<f32> {
        let d = self.codes.len() / self.shape[0].max(1);
        let k2 = (self.shape[2] * self.shape[3]).max(1);
        self.codes
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                let (r, j) = (k / d.max(1), k % d.max(1));
                let v = self.row_scale[r] * (c as f32 - self.row_zero[r]);
                match &self.col_scale {
                    Some(cs) => v / cs[j / k2],
                    None => v,
                }
            })
            .collect()
    }

    /// Bytes when stored: packed codes, f32 scale and zero per row, column scales.
    pub fn stored_bytes(&self) -> usize {
        (self.codes.len() * self.storage_bits as usize).div_ceil(8)
            + self.row_scale.len() * 8
            + self.col_scale.as_ref().map_or(0, |c| c.len() * 4)
    }
}
