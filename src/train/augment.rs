//! CIFAR-style augmentation on u8 images: pad 4 and random crop, random
//! horizontal flip. Seeded, so a training run is reproducible.
use crate::data::Image;
use crate::util::Rng;

pub fn crop_flip(img: &Image, pad: usize, rng: &mut Rng) -> Image {
    let (w, h, c) = (
        img.width as usize,
        img.height as usize,
        img.channels as usize,
    );
    let dx = rng.below(2 * pad + 1) as isize - pad as isize;
    let dy = rng.below(2 * pad + 1) as isize - pad as isize;
    let flip = rng.below(2) == 1;
    let mut out = vec![0u8; w * h * c];
    for y in 0..h {
        let sy = y as isize + dy;
        if sy < 0 || sy >= h as isize {
            continue;
        }
        for x in 0..w {
            let xx = if flip { w - 1 - x } else { x };
            let sx = xx as isize + dx;
            if sx < 0 || sx >= w as isize {
                continue;
            }
            let (d, s) = ((y * w + x) * c, (sy as usize * w + sx as usize) * c);
            out[d..d + c].copy_from_slice(&img.pixels[s..s + c]);
        }
    }
    Image {
        width: img.width,
        height: img.height,
        channels: img.channels,
        pixels: out,
    }
}
