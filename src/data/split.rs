//! A decoded split: u8 images (HWC), labels and class names.
#[derive(Clone, Debug)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    /// Row-major `height × width × channels`.
    pub pixels: Vec<u8>,
}

#[derive(Debug)]
pub struct Split {
    /// Where it was read from, for messages.
    pub source: String,
    pub class_names: Vec<String>,
    pub images: Vec<Image>,
    pub labels: Vec<u32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.images.len()
    }
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }
    /// Indices of every image whose label is in `classes`, in file order.
    pub fn indices_of(&self, classes: &[usize]) -> Vec<usize> {
        let mut keep = vec![false; self.num_classes()];
        for &c in classes {
            if let Some(k) = keep.get_mut(c) {
                *k = true;
            }
        }
        (0..self.len())
            .filter(|&i| keep.get(self.labels[i] as usize).copied().unwrap_or(false))
            .collect()
    }
    /// Indices grouped by class.
    pub fn by_class(&self) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.num_classes()];
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(g) = groups.get_mut(l as usize) {
                g.push(i);
            }
        }
        groups
    }
    /// Approximate heap size in bytes.
    pub fn bytes(&self) -> usize {
        self.images.iter().map(|i| i.pixels.len()).sum()
    }
}
