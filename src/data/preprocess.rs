//! u8 images → normalised NCHW f32 batches, the way the model was trained:
//! optional resize of the shorter side and centre crop (ImageNet models),
//! channel conversion (grey ↔ RGB), `(x/255 − mean) / std`.
use crate::data::split::{Image, Split};
use crate::engine::Tensor;
use crate::model::ModelMeta;
use rayon::prelude::*;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Preprocess {
    pub size: usize,
    pub resize: Option<usize>,
    pub channels: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Preprocess {
    pub fn for_model(meta: &ModelMeta) -> Self {
        Preprocess {
            size: meta.input_size,
            resize: meta.resize,
            channels: meta.input_channels,
            mean: meta.mean.clone(),
            std: meta.std.clone(),
        }
    }

    /// The image as `size × size` pixels with `self.channels` channels, HWC u8.
    fn geometry(&self, img: &Image) -> Vec<u8> {
        let (w, h) = (img.width, img.height);
        let s = self.size as u32;
        let pixels = if let Some(r) = self.resize {
            // Shorter side to `r`, then the centre `s × s` crop.
            let r = r as u32;
            let (nw, nh) = if w <= h {
                (r, (h as u64 * r as u64 / w.max(1) as u64) as u32)
            } else {
                ((w as u64 * r as u64 / h.max(1) as u64) as u32, r)
            };
            let resized = resize(img, nw, nh);
            let (x0, y0) = ((nw.saturating_sub(s)) / 2, (nh.saturating_sub(s)) / 2);
            let c = img.channels as usize;
            let mut out = vec![0u8; (s * s) as usize * c];
            for y in 0..s.min(nh) {
                let src = ((y0 + y) * nw + x0) as usize * c;
                let dst = (y * s) as usize * c;
                let n = s.min(nw) as usize * c;
                out[dst..dst + n].copy_from_slice(&resized[src..src + n]);
            }
            out
        } else if w != s || h != s {
            resize(img, s, s)
        } else {
            img.pixels.clone()
        };
        convert_channels(&pixels, img.channels as usize, self.channels)
    }

    /// One normalised NCHW batch of loose images (e.g. augmented copies).
    pub fn batch_images(&self, images: &[Image]) -> Tensor {
        let (s, c) = (self.size, self.channels);
        let per = c * s * s;
        let mut data = vec![0f32; images.len() * per];
        data.par_chunks_mut(per)
            .zip(images.par_iter())
            .for_each(|(dst, img)| self.write(img, dst));
        Tensor::from_shape_vec((images.len(), c, s, s), data)
            .unwrap_or_else(|_| Tensor::zeros((0, c, s, s)))
    }

    fn write(&self, img: &Image, dst: &mut [f32]) {
        let (s, c) = (self.size, self.channels);
        let px = self.geometry(img);
        for ch in 0..c {
            let (m, sd) = (self.mean[ch], self.std[ch]);
            let plane = &mut dst[ch * s * s..(ch + 1) * s * s];
            for (p, v) in plane.iter_mut().enumerate() {
                *v = (px[p * c + ch] as f32 / 255.0 - m) / sd;
            }
        }
    }

    /// One normalised NCHW batch of `split.images[indices]`.
    pub fn batch(&self, split: &Split, indices: &[usize]) -> Tensor {
        let (s, c) = (self.size, self.channels);
        let per = c * s * s;
        let mut data = vec![0f32; indices.len() * per];
        data.par_chunks_mut(per)
            .zip(indices.par_iter())
            .for_each(|(dst, &i)| {
                let px = self.geometry(&split.images[i]);
                for ch in 0..c {
                    let (m, sd) = (self.mean[ch], self.std[ch]);
                    let plane = &mut dst[ch * s * s..(ch + 1) * s * s];
                    for (p, v) in plane.iter_mut().enumerate() {
                        *v = (px[p * c + ch] as f32 / 255.0 - m) / sd;
                    }
                }
            });
        Tensor::from_shape_vec((indices.len(), c, s, s), data)
            .unwrap_or_else(|_| Tensor::zeros((0, c, s, s)))
    }
}

fn resize(img: &Image, w: u32, h: u32) -> Vec<u8> {
    use image::{imageops, ImageBuffer, Luma, Rgb};
    let filter = imageops::FilterType::Triangle;
    if img.channels == 1 {
        ImageBuffer::<Luma<u8>, _>::from_raw(img.width, img.height, img.pixels.clone())
            .map(|b| imageops::resize(&b, w, h, filter).into_raw())
            .unwrap_or_else(|| vec![0; (w * h) as usize])
    } else {
        ImageBuffer::<Rgb<u8>, _>::from_raw(img.width, img.height, img.pixels.clone())
            .map(|b| imageops::resize(&b, w, h, filter).into_raw())
            .unwrap_or_else(|| vec![0; (w * h * 3) as usize])
    }
}

fn convert_channels(px: &[u8], from: usize, to: usize) -> Vec<u8> {
    match (from, to) {
        (a, b) if a == b => px.to_vec(),
        (1, 3) => px.iter().flat_map(|&v| [v, v, v]).collect(),
        (3, 1) => px
            .chunks_exact(3)
            .map(|p| {
                (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round() as u8
            })
            .collect(),
        _ => px
            .iter()
            .step_by(from.max(1))
            .flat_map(|&v| std::iter::repeat_n(v, to))
            .collect(),
    }
}
