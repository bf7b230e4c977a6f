//! Dataset readers on files written here: image folders, CIFAR binaries,
//! MNIST IDX (plain and gzipped), and clear errors for bad input.
use qscope::data::{
    parse_classes, sample_per_class, sample_spread, spread, DatasetRoot, Preprocess, SplitKind,
};
use std::io::Write;
use std::path::Path;

fn write_png(path: &Path, w: u32, h: u32, v: u8) {
    image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
        .save(path)
        .expect("png");
}

fn folder_dataset(root: &Path, classes: &[&str], per: usize) {
    for split in ["train", "test"] {
        for (ci, c) in classes.iter().enumerate() {
            let d = root.join(split).join(c);
            std::fs::create_dir_all(&d).expect("mkdir");
            for i in 0..per {
                write_png(&d.join(format!("{i:03}.png")), 32, 32, (ci * 40 + i) as u8);
            }
        }
    }
}

/// A root holding `test/` class folders alone (a test set to evaluate on)
/// opens as that split, and asking for training images names the missing
/// folder. A single folder of class folders whose class is called `train`
/// (CIFAR-100 has one) stays a class.
#[test]
fn a_lone_test_folder_opens_and_a_class_named_train_stays_a_class() {
    let dir = tempfile::tempdir().expect("tmp");
    folder_dataset(dir.path(), &["cat", "dog"], 2);
    std::fs::remove_dir_all(dir.path().join("train")).expect("rm");
    let root = DatasetRoot::open(dir.path()).expect("open");
    assert_eq!(
        root.describe(),
        "image folders · no train split · test 4 images"
    );
    let test = root.split(SplitKind::Test).expect("test");
    assert_eq!(test.class_names, vec!["cat", "dog"]);
    let e = root
        .split(SplitKind::Train)
        .expect_err("no train")
        .to_string();
    assert!(e.contains("train") && e.contains("does not exist"), "{e}");

    let dir = tempfile::tempdir().expect("tmp");
    for (ci, c) in ["bus", "train"].iter().enumerate() {
        let d = dir.path().join(c);
        std::fs::create_dir_all(&d).expect("mkdir");
        write_png(&d.join("0.png"), 32, 32, ci as u8);
    }
    let root = DatasetRoot::open(dir.path()).expect("open");
    let test = root.split(SplitKind::Test).expect("test");
    assert_eq!(test.class_names, vec!["bus", "train"]);
}

#[test]
fn image_folders_sort_classes_and_normalise() {
    let dir = tempfile::tempdir().expect("tmp");
    folder_dataset(dir.path(), &["zebra", "apple", "mango"], 4);
    let root = DatasetRoot::open(dir.path()).expect("open");
    // Counted without decoding (the dashboard's dataset line).
    assert_eq!(root.describe(), "image folders · train 12 · test 12 images");
    let test = root.split(SplitKind::Test).expect("split");
    assert_eq!(test.class_names, vec!["apple", "mango", "zebra"]);
    assert_eq!(test.len(), 12);
    let pre = Preprocess {
        size: 32,
        resize: None,
        channels: 3,
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
    };
    let b = pre.batch(&test, &[0]);
    // apple is class 1 in creation order → pixel value 40: (40/255 - .5)/.5
    let want = (40.0 / 255.0 - 0.5) / 0.5;
    assert!((b[[0, 0, 3, 3]] - want).abs() < 1e-6);
    // The cache hands back the same decoded split.
    assert!(std::sync::Arc::ptr_eq(
        &test,
        &root.split(SplitKind::Test).expect("again")
    ));
}

#[test]
fn cifar_binaries_read_labels_and_planar_pixels() {
    let dir = tempfile::tempdir().expect("tmp");
    let rec = |label: u8, v: u8| -> Vec<u8> {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(v, 1024));
        r.extend(std::iter::repeat_n(v / 2, 1024));
        r.extend(std::iter::repeat_n(255 - v, 1024));
        r
    };
    for i in 1..=5 {
        std::fs::write(
            dir.path().join(format!("data_batch_{i}.bin")),
            [rec(i, 10), rec(0, 20)].concat(),
        )
        .expect("w");
    }
    std::fs::write(
        dir.path().join("test_batch.bin"),
        [rec(9, 100), rec(3, 50), rec(3, 60)].concat(),
    )
    .expect("w");
    let root = DatasetRoot::open(dir.path()).expect("open");
    assert_eq!(root.describe(), "CIFAR binaries · train 10 · test 3 images");
    let train = root.split(SplitKind::Train).expect("train");
    assert_eq!(train.len(), 10);
    let test = root.split(SplitKind::Test).expect("test");
    assert_eq!(test.labels, vec![9, 3, 3]);
    assert_eq!(test.class_names[9], "truck");
    assert_eq!(&test.images[0].pixels[..3], &[100, 50, 155]);
    // A truncated batch is reported with its file name.
    std::fs::write(dir.path().join("test_batch.bin"), vec![0u8; 100]).expect("w");
    let dir2 = tempfile::tempdir().expect("tmp");
    for f in ["data_batch_1.bin", "test_batch.bin"] {
        std::fs::copy(dir.path().join(f), dir2.path().join(f)).expect("copy");
    }
    let e = DatasetRoot::open(dir2.path())
        .expect("open")
        .split(SplitKind::Test)
        .expect_err("bad")
        .to_string();
    assert!(e.contains("test_batch.bin") && e.contains("3073"), "{e}");
}

#[test]
fn mnist_idx_plain_and_gzipped() {
    let dir = tempfile::tempdir().expect("tmp");
    let images = |n: u32| -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            v.extend(d.to_be_bytes());
        }
        v.extend((0..n * 784).map(|i| (i % 251) as u8));
        v
    };
    let labels = |n: u32| -> Vec<u8> {
        let mut v = vec![0, 0, 8, 1];
        v.extend(n.to_be_bytes());
        v.extend((0..n).map(|i| (i % 10) as u8));
        v
    };
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), images(20)).expect("w");
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), labels(20)).expect("w");
    let gz = |data: Vec<u8>, name: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).expect("gz");
        std::fs::write(dir.path().join(name), e.finish().expect("gz")).expect("w");
    };
    gz(images(7), "t10k-images-idx3-ubyte.gz");
    gz(labels(7), "t10k-labels-idx1-ubyte.gz");
    let root = DatasetRoot::open(dir.path()).expect("open");
    assert_eq!(root.describe(), "IDX (MNIST) · train 20 · test 7 images");
    let test = root.split(SplitKind::Test).expect("test");
    assert_eq!(test.len(), 7);
    assert_eq!(test.labels[3], 3);
    assert_eq!(test.images[0].channels, 1);
    assert_eq!(root.split(SplitKind::Train).expect("train").len(), 20);
}

/// A folder with one split only (a CIFAR test batch, MNIST's t10k files)
/// opens; that split reads, and asking for the other names the file that
/// is missing.
#[test]
fn a_single_split_of_cifar_or_mnist_opens_and_names_the_missing_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = vec![7u8];
    rec.extend(std::iter::repeat_n(9u8, 3072));
    std::fs::write(dir.path().join("test_batch.bin"), &rec).expect("w");
    let root = DatasetRoot::open(dir.path()).expect("open");
    assert_eq!(
        root.describe(),
        "CIFAR binaries · no train split · test 1 images"
    );
    assert_eq!(root.split(SplitKind::Test).expect("test").labels, vec![7]);
    let e = root
        .split(SplitKind::Train)
        .expect_err("no train")
        .to_string();
    assert!(e.contains("data_batch_1.bin"), "{e}");

    let dir = tempfile::tempdir().expect("tmp");
    let mut images = vec![0, 0, 8, 3];
    for d in [2u32, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    images.extend(std::iter::repeat_n(5u8, 2 * 784));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend(2u32.to_be_bytes());
    labels.extend([4, 2]);
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), images).expect("w");
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), labels).expect("w");
    let root = DatasetRoot::open(dir.path()).expect("open");
    assert_eq!(
        root.split(SplitKind::Test).expect("test").labels,
        vec![4, 2]
    );
    let e = root
        .split(SplitKind::Train)
        .expect_err("no train")
        .to_string();
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
}

#[test]
fn missing_empty_and_unreadable_inputs_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = DatasetRoot::open(&dir.path().join("nowhere"))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("nowhere") && e.contains("does not exist"), "{e}");
    let e = DatasetRoot::open(dir.path())
        .expect_err("empty")
        .to_string();
    assert!(e.contains("no dataset found"), "{e}");
    let cls = dir.path().join("cat");
    std::fs::create_dir_all(&cls).expect("mkdir");
    let e = DatasetRoot::open(dir.path())
        .expect("open")
        .split(SplitKind::Test)
        .expect_err("no images")
        .to_string();
    assert!(e.contains("cat") && e.contains("no .jpg"), "{e}");
    std::fs::write(cls.join("broken.jpg"), b"\xff\xd8 definitely not a jpeg").expect("w");
    let dir2 = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir2.path().join("cat")).expect("mkdir");
    std::fs::write(dir2.path().join("cat/broken.jpg"), b"\xff\xd8 nope").expect("w");
    let e = DatasetRoot::open(dir2.path())
        .expect("open")
        .split(SplitKind::Test)
        .expect_err("corrupt")
        .to_string();
    assert!(e.contains("broken.jpg") && e.contains("decode"), "{e}");
}

#[test]
fn subsets_and_seeded_sampling_are_deterministic() {
    let dir = tempfile::tempdir().expect("tmp");
    folder_dataset(dir.path(), &["a", "b", "c", "d"], 6);
    let split = DatasetRoot::open(dir.path())
        .expect("open")
        .split(SplitKind::Train)
        .expect("split");
    let names = split.class_names.clone();
    assert_eq!(parse_classes("d, b", &names).expect("ok"), vec![1, 3]);
    assert_eq!(parse_classes("0,c", &names).expect("ok"), vec![0, 2]);
    assert_eq!(parse_classes("all", &names).expect("ok"), vec![0, 1, 2, 3]);
    assert!(parse_classes("zebra", &names)
        .expect_err("bad")
        .to_string()
        .contains("zebra"));
    let a = sample_per_class(&split, &[1, 3], 4, 42).expect("ok");
    assert_eq!(a, sample_per_class(&split, &[1, 3], 4, 42).expect("ok"));
    assert_ne!(a, sample_per_class(&split, &[1, 3], 4, 43).expect("ok"));
    assert!(a
        .iter()
        .all(|&i| [1, 3].contains(&(split.labels[i] as usize))));
    let s = sample_spread(&split, &[0, 1, 2], 10, 1).expect("ok");
    assert_eq!(s.len(), 10);
    let per: Vec<usize> = (0..3)
        .map(|c| s.iter().filter(|&&i| split.labels[i] as usize == c).count())
        .collect();
    assert_eq!(per, vec![4, 3, 3], "equal shares, the first class one more");
    // All 24 images of four classes: every image once.
    let mut all = sample_spread(&split, &[0, 1, 2, 3], 24, 1).expect("ok");
    all.sort_unstable();
    assert_eq!(all, (0..24).collect::<Vec<_>>());
    assert!(sample_spread(&split, &[0], 7, 1)
        .expect_err("too many")
        .to_string()
        .contains("only 6"));
}

/// Calibration sets from unbalanced classes (MNIST's differ by 20 %): a
/// class too small for its share gives all it has, and the others make up
/// the rest, so any total up to the images available can be drawn.
#[test]
fn spread_fills_small_classes_and_shares_the_rest() {
    assert_eq!(spread(&[10, 10, 10], 7), vec![3, 2, 2]);
    assert_eq!(spread(&[2, 10, 10], 12), vec![2, 5, 5]);
    assert_eq!(spread(&[2, 3, 10], 15), vec![2, 3, 10]);
    assert_eq!(spread(&[0, 5, 1], 4), vec![0, 3, 1]);
    assert_eq!(spread(&[4, 9, 9], 21), vec![4, 9, 8]);
    for counts in [vec![1, 7, 3, 12], vec![5, 0, 5, 2], vec![86, 120, 100, 95]] {
        let sum: usize = counts.iter().sum();
        for total in 0..=sum {
            let t = spread(&counts, total);
            assert_eq!(t.iter().sum::<usize>(), total, "{counts:?} {total}");
            assert!(t.iter().zip(&counts).all(|(a, c)| a <= c));
            // No class is short of its equal share while another has more than
            // one above it: the spread is as even as the counts allow.
            for (j, &a) in t.iter().enumerate() {
                if a < counts[j] {
                    assert!(t.iter().all(|&b| b <= a + 1), "{counts:?} {total}: {t:?}");
                }
            }
        }
    }
}
