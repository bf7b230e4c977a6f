//! Every activation is a 4-D NCHW array; a flattened vector is `[N, C, 1, 1]`.
//! One rank keeps every op's indexing simple and the layout explicit.
pub type Tensor = ndarray::Array4<f32>;

/// A zero tensor of shape `[n, c, h, w]`.
pub fn zeros(n: usize, c: usize, h: usize, w: usize) -> Tensor {
    Tensor::zeros((n, c, h, w))
}

/// The contiguous slice of a standard-layout tensor. All engine ops produce
/// standard layout; this re-lays out anything else.
pub fn contiguous(t: &Tensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.iter().copied().collect()),
    }
}
