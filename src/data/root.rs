//! Finding the train and test splits under a dataset root, whatever its format:
//! `root/{train,test}/<class>/` folders, CIFAR-10/100 binaries, MNIST IDX, or a
//! single folder of class folders (then train and test are the same split).
use crate::data::formats;
use crate::data::split::Split;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    Train,
    Test,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SplitSource {
    Folder(PathBuf),
    CifarBin {
        files: Vec<PathBuf>,
        label_bytes: usize,
        names: Vec<String>,
    },
    Idx {
        images: PathBuf,
        labels: PathBuf,
        names: Vec<String>,
    },
}

#[derive(Clone, Debug)]
pub struct DatasetRoot {
    pub root: PathBuf,
    pub train: SplitSource,
    pub test: SplitSource,
    /// True when the root is one folder of class folders used for both splits.
    pub single_split: bool,
}

const CIFAR10_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

fn read_names(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (!names.is_empty()).then_some(names)
}

fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// A split's file, or where it was expected: a folder holding only one
/// split still opens (evaluating on a test batch alone is common), and
/// asking for the missing one is an error naming the missing file.
fn file_or_expected(dir: &Path, name: &str) -> PathBuf {
    find_file(dir, name).unwrap_or_else(|| dir.join(name))
}

impl DatasetRoot {
    pub fn open(root: &Path) -> Result<Self> {
        if !root.exists() {
            return Err(Error::dataset(root, "does not exist"));
        }
        if !root.is_dir() {
            return Err(Error::dataset(root, "is not a folder"));
        }
        // The official archives unpack into a sub-folder; accept either level.
        for sub in ["", "cifar-10-batches-bin", "cifar-100-binary"] {
            let dir = if sub.is_empty() {
                root.to_path_buf()
            } else {
                root.join(sub)
            };
            if dir.join("data_batch_1.bin").is_file() || dir.join("test_batch.bin").is_file() {
                let names = read_names(&dir.join("batches.meta.txt"))
                    .unwrap_or_else(|| CIFAR10_NAMES.iter().map(|s| s.to_string()).collect());
                let mut train: Vec<PathBuf> = (1..=5)
                    .map(|i| dir.join(format!("data_batch_{i}.bin")))
                    .filter(|p| p.is_file())
                    .collect();
                if train.is_empty() {
                    train.push(dir.join("data_batch_1.bin"));
                }
                return Ok(DatasetRoot {
                    root: root.to_path_buf(),
                    train: SplitSource::CifarBin {
                        files: train,
                        label_bytes: 1,
                        names: names.clone(),
                    },
                    test: SplitSource::CifarBin {
                        files: vec![dir.join("test_batch.bin")],
                        label_bytes: 1,
                        names,
                    },
                    single_split: false,
                });
            }
            if dir.join("train.bin").is_file() || dir.join("test.bin").is_file() {
                let names = read_names(&dir.join("fine_label_names.txt"))
                    .unwrap_or_else(|| (0..100).map(|i| format!("class{i:02}")).collect());
                return Ok(DatasetRoot {
                    root: root.to_path_buf(),
                    train: SplitSource::CifarBin {
                        files: vec![dir.join("train.bin")],
                        label_bytes: 2,
                        names: names.clone(),
                    },
                    test: SplitSource::CifarBin {
                        files: vec![dir.join("test.bin")],
                        label_bytes: 2,
                        names,
                    },
                    single_split: false,
                });
            }
        }
        let idx_train = find_file(root, "train-images-idx3-ubyte").is_some();
        if idx_train || find_file(root, "t10k-images-idx3-ubyte").is_some() {
            let [ti, tl, vi, vl] = [
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ]
            .map(|n| file_or_expected(root, n));
            let names = read_names(&root.join("classes.txt"))
                .unwrap_or_else(|| (0..10).map(|i| i.to_string()).collect());
            return Ok(DatasetRoot {
                root: root.to_path_buf(),
                train: SplitSource::Idx {
                    images: ti,
                    labels: tl,
                    names: names.clone(),
                },
                test: SplitSource::Idx {
                    images: vi,
                    labels: vl,
                    names,
                },
                single_split: false,
            });
        }
        let (train, test) = (root.join("train"), root.join("test"));
        // One split alone (a test set to evaluate on) is that layout too if
        // its folder holds class folders; a *class* named `train` or `test`
        // (CIFAR-100 has a `train`) holds images, and stays a class.
        let lone_split =
            |d: &Path| -> Result<bool> { Ok(d.is_dir() && !formats::class_dirs(d)?.is_empty()) };
        if (train.is_dir() && test.is_dir())
            || (!train.exists() && lone_split(&test)?)
            || (!test.exists() && lone_split(&train)?)
        {
            return Ok(DatasetRoot {
                root: root.to_path_buf(),
                train: SplitSource::Folder(train),
                test: SplitSource::Folder(test),
                single_split: false,
            });
        }
        if formats::class_dirs(root)?.is_empty() {
            return Err(Error::dataset(
                root,
                "no dataset found: expected train/ and test/ class folders, a folder of class folders, CIFAR .bin files or MNIST IDX files",
            ));
        }
        Ok(DatasetRoot {
            root: root.to_path_buf(),
            train: SplitSource::Folder(root.to_path_buf()),
            test: SplitSource::Folder(root.to_path_buf()),
            single_split: true,
        })
    }

    pub fn source(&self, kind: SplitKind) -> &SplitSource {
        match kind {
            SplitKind::Train => &self.train,
            SplitKind::Test => &self.test,
        }
    }

    /// Class names without decoding any image (for pickers).
    pub fn class_names(&self) -> Result<Vec<String>> {
        match &self.test {
            SplitSource::Folder(dir) => Ok(formats::class_dirs(dir)?
                .iter()
                .map(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect()),
            SplitSource::CifarBin { names, .. } | SplitSource::Idx { names, .. } => {
                Ok(names.clone())
            }
        }
    }

    /// What the dataset holds, without decoding an image: its format and
    /// the images per split, e.g. `image folders · train 500 · test 1000 images`.
    pub fn describe(&self) -> String {
        let count = |src: &SplitSource| match src {
            SplitSource::Folder(dir) => formats::count_folder_images(dir),
            SplitSource::CifarBin {
                files, label_bytes, ..
            } => formats::count_cifar_records(files, *label_bytes),
            SplitSource::Idx { images, .. } => formats::count_idx_images(images),
        };
        let format = match &self.test {
            SplitSource::Folder(_) => "image folders",
            SplitSource::CifarBin { .. } => "CIFAR binaries",
            SplitSource::Idx { .. } => "IDX (MNIST)",
        };
        let part = |name: &str, src: &SplitSource| match count(src) {
            Ok(n) => format!("{name} {n}"),
            Err(_) => format!("no {name} split"),
        };
        format!(
            "{format} · {} · {} images",
            part("train", &self.train),
            part("test", &self.test)
        )
    }

    /// The decoded split, from the process-wide cache when already decoded.
    pub fn split(&self, kind: SplitKind) -> Result<Arc<Split>> {
        load_cached(self.source(kind))
    }
}

type Cache = Mutex<HashMap<SplitSource, Arc<Split>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

pub fn load_cached(source: &SplitSource) -> Result<Arc<Split>> {
    if let Some(s) = cache().lock().ok().and_then(|c| c.get(source).cloned()) {
        return Ok(s);
    }
    let split = Arc::new(match source {
        SplitSource::Folder(dir) => formats::read_image_folder(dir)?,
        SplitSource::CifarBin {
            files,
            label_bytes,
            names,
        } => formats::read_cifar_bin(files, *label_bytes, names.clone())?,
        SplitSource::Idx {
            images,
            labels,
            names,
        } => formats::read_idx(images, labels, names.clone())?,
    });
    if let Ok(mut c) = cache().lock() {
        c.insert(source.clone(), split.clone());
    }
    Ok(split)
}
