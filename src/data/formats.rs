//! Readers for the on-disk formats users already have.
use crate::data::split::{Image, Split};
use crate::{Error, Result};
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    Ok(entries)
}

/// The images of one class folder, by extension, sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect())
}

/// Images in a folder split, without decoding any.
pub fn count_folder_images(dir: &Path) -> Result<usize> {
    class_dirs(dir)?
        .iter()
        .map(|c| image_files(c).map(|v| v.len()))
        .sum()
}

/// Records in CIFAR batches, from the file sizes.
pub fn count_cifar_records(files: &[PathBuf], label_bytes: usize) -> Result<usize> {
    files
        .iter()
        .map(|f| {
            let len = std::fs::metadata(f).map_err(|e| Error::io(f, e))?.len() as usize;
            Ok(len / (label_bytes + 3072))
        })
        .sum()
}

/// The image count in an IDX file's header: its first 8 bytes only,
/// through the gzip stream if compressed (the file may be 47 MB).
pub fn count_idx_images(images: &Path) -> Result<usize> {
    let mut file = std::fs::File::open(images).map_err(|e| Error::io(images, e))?;
    let mut magic = [0u8; 2];
    let gz = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let mut head = [0u8; 8];
    let read = if gz {
        let file = std::fs::File::open(images).map_err(|e| Error::io(images, e))?;
        flate2::read::GzDecoder::new(file).read_exact(&mut head)
    } else {
        head[..2].copy_from_slice(&magic);
        file.read_exact(&mut head[2..])
    };
    read.map_err(|_| Error::dataset(images, "truncated IDX header"))?;
    Ok(u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize)
}

/// Sub-directories of `dir`, sorted by name (class index = position).
pub fn class_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_dir(dir)?.into_iter().filter(|p| p.is_dir()).collect())
}

pub fn decode_image(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::load_from_memory(&bytes).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let grey = matches!(img.color(), image::ColorType::L8 | image::ColorType::L16);
    Ok(if grey {
        let g = img.to_luma8();
        Image {
            width: g.width(),
            height: g.height(),
            channels: 1,
            pixels: g.into_raw(),
        }
    } else {
        let rgb = img.to_rgb8();
        Image {
            width: rgb.width(),
            height: rgb.height(),
            channels: 3,
            pixels: rgb.into_raw(),
        }
    })
}

/// `dir/<class>/*.{jpg,jpeg,png}`; class index = sorted folder name.
pub fn read_image_folder(dir: &Path) -> Result<Split> {
    if !dir.exists() {
        // A dataset holding one split only, asked for the other.
        return Err(Error::dataset(
            dir,
            "does not exist: this dataset has no such split folder",
        ));
    }
    if !dir.is_dir() {
        return Err(Error::dataset(dir, "is not a folder"));
    }
    let classes = class_dirs(dir)?;
    if classes.is_empty() {
        return Err(Error::dataset(
            dir,
            "has no class sub-folders (expected <split>/<class>/*.jpg)",
        ));
    }
    let mut files = Vec::new();
    let mut class_names = Vec::new();
    for (label, cdir) in classes.iter().enumerate() {
        let imgs = image_files(cdir)?;
        if imgs.is_empty() {
            return Err(Error::dataset(
                cdir,
                "class folder has no .jpg/.jpeg/.png images",
            ));
        }
        class_names.push(
            cdir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        files.extend(imgs.into_iter().map(|p| (p, label as u32)));
    }
    let images = files
        .par_iter()
        .map(|(p, _)| decode_image(p))
        .collect::<Result<Vec<_>>>()?;
    Ok(Split {
        source: dir.display().to_string(),
        class_names,
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
    })
}

/// CIFAR binary batches: records of `label_bytes` label byte(s) (CIFAR-100 has
/// coarse then fine; the last is used) followed by 3072 bytes, planar RGB 32×32.
pub fn read_cifar_bin(
    files: &[PathBuf],
    label_bytes: usize,
    class_names: Vec<String>,
) -> Result<Split> {
    let rec = label_bytes + 3072;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        if bytes.is_empty() || bytes.len() % rec != 0 {
            return Err(Error::dataset(
                f,
                format!(
                    "size {} is not a multiple of the {rec}-byte CIFAR record",
                    bytes.len()
                ),
            ));
        }
        for r in bytes.chunks_exact(rec) {
            let label = r[label_bytes - 1] as u32;
            if label as usize >= class_names.len() {
                return Err(Error::dataset(
                    f,
                    format!(
                        "label {label} out of range for {} classes",
                        class_names.len()
                    ),
                ));
            }
            let planes = &r[label_bytes..];
            let mut pixels = vec![0u8; 3072];
            for i in 0..1024 {
                for c in 0..3 {
                    pixels[i * 3 + c] = planes[c * 1024 + i];
                }
            }
            images.push(Image {
                width: 32,
                height: 32,
                channels: 3,
                pixels,
            });
            labels.push(label);
        }
    }
    let source = files
        .first()
        .and_then(|f| f.parent())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Ok(Split {
        source,
        class_names,
        images,
        labels,
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::dataset(path, format!("corrupt gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// MNIST / Fashion-MNIST IDX files (optionally gzipped).
pub fn read_idx(images_path: &Path, labels_path: &Path, class_names: Vec<String>) -> Result<Split> {
    let img = read_maybe_gz(images_path)?;
    let lab = read_maybe_gz(labels_path)?;
    let be = |b: &[u8], at: usize| -> Option<usize> {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    if be(&img, 0) != Some(0x0803) {
        return Err(Error::dataset(
            images_path,
            "not an IDX image file (magic 0x00000803 expected)",
        ));
    }
    if be(&lab, 0) != Some(0x0801) {
        return Err(Error::dataset(
            labels_path,
            "not an IDX label file (magic 0x00000801 expected)",
        ));
    }
    let (n, h, w) = match (be(&img, 4), be(&img, 8), be(&img, 12)) {
        (Some(n), Some(h), Some(w)) => (n, h, w),
        _ => return Err(Error::dataset(images_path, "truncated IDX header")),
    };
    if img.len() != 16 + n * h * w {
        return Err(Error::dataset(
            images_path,
            format!(
                "expected {} bytes for {n} images of {h}x{w}, found {}",
                16 + n * h * w,
                img.len()
            ),
        ));
    }
    if be(&lab, 4) != Some(n) || lab.len() != 8 + n {
        return Err(Error::dataset(
            labels_path,
            format!("label count does not match the {n} images"),
        ));
    }
    let mut images = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = lab[8 + i] as u32;
        if label as usize >= class_names.len() {
            return Err(Error::dataset(
                labels_path,
                format!("label {label} out of range"),
            ));
        }
        images.push(Image {
            width: w as u32,
            height: h as u32,
            channels: 1,
            pixels: img[16 + i * h * w..16 + (i + 1) * h * w].to_vec(),
        });
        labels.push(label);
    }
    Ok(Split {
        source: images_path.display().to_string(),
        class_names,
        images,
        labels,
    })
}
