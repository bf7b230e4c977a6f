//! Every activation is a 4-D NCHW array; a flattened vector is `[N, C, 1, 1]`.
//! One rank keeps every op's indexing simple and the layout explicit.
pub type Tensor = ndarray::Array4<f32>;

/// A zero tensor of shape `[n, c, h, w]`.
pub fn zeros(n: usize, c: usize, h: usize, w: usize) -> Tensor {
    Tensor::zeros((n, c, h, w))
}

/// Recycled activation buffers. Batch-256 activations are megabytes; a fresh
/// allocation of that size comes from the OS as zeroed pages, and page
/// faults measured 14 % of an int8 forward pass. Ops whose every output
/// element is written take their output from here; the executor returns
/// values it no longer needs.
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
const POOL_BUFFERS: usize = 8;

/// A tensor of shape `[n, c, h, w]` whose contents are unspecified (stale
/// values from a recycled buffer): only for outputs that are fully written.
pub fn uninit(shape: (usize, usize, usize, usize)) -> Tensor {
    let len = shape.0 * shape.1 * shape.2 * shape.3;
    let reused = POOL.lock().ok().and_then(|mut pool| {
        // Smallest buffer that fits, so big ones stay for big tensors.
        let best = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity())?;
        Some(pool.swap_remove(best))
    });
    let mut v = reused.unwrap_or_default();
    v.resize(len, 0.0);
    v.truncate(len);
    Tensor::from_shape_vec(shape, v).unwrap_or_else(|_| Tensor::zeros(shape))
}

/// Hand a tensor's buffer back for reuse.
pub fn recycle(t: Tensor) {
    if !t.is_standard_layout() || t.len() < 4096 {
        return;
    }
    let (v, _) = t.into_raw_vec_and_offset();
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < POOL_BUFFERS {
            pool.push(v);
        } else if let Some(small) = (0..pool.len()).min_by_key(|&i| pool[i].capacity()) {
            if pool[small].capacity() < v.capacity() {
                pool[small] = v;
            }
        }
    }
}

/// The contiguous slice of a standard-layout tensor. All engine ops produce
/// standard layout; this re-lays out anything else.
pub fn contiguous(t: &Tensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.iter().copied().collect()),
    }
}
