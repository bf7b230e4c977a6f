//! The bundled pretrained ResNet-20 on the bundled 1,000-image CIFAR-10 test
//! sample. Reference: an independent numpy forward gets 81.0 % on the full
//! JPEG test set; on this sample qscope measured 80.9 %. A wrong op, layout
//! or normalisation drops it to chance (10 %), so the bound [78, 84] is tight
//! enough to catch real bugs and loose enough for f32 summation order.
use qscope::data::{DatasetRoot, Preprocess, SplitKind};
use qscope::eval::accuracy::eval_indices;
use std::path::Path;
use std::sync::atomic::AtomicBool;

#[test]
fn pretrained_resnet20_reaches_published_jpeg_accuracy_on_the_sample() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let g = qscope::model::load(&base.join("resnet20.safetensors"))
        .expect("load")
        .fused();
    assert_eq!(g.meta.arch, "resnet20");
    let split = DatasetRoot::open(&base.join("cifar10"))
        .expect("open")
        .split(SplitKind::Test)
        .expect("split");
    let classes = [2, 3, 5];
    let idx = eval_indices(&split, &(0..10).collect::<Vec<_>>(), None);
    let pre = Preprocess::for_model(&g.meta);
    let r = qscope::eval::evaluate(
        &g,
        &split,
        &idx,
        &pre,
        None,
        200,
        &AtomicBool::new(false),
        &mut |_, _| {},
    )
    .expect("eval");
    assert_eq!(r.images, 1000);
    assert!((78.0..84.0).contains(&r.top1_all), "top-1 {}", r.top1_all);
    assert!(r.top5_all > 97.0);
    // Sub ≥ All always: restricting the argmax can only help.
    let sub_idx = eval_indices(&split, &classes, None);
    let s = qscope::eval::evaluate(
        &g,
        &split,
        &sub_idx,
        &pre,
        Some(&classes),
        200,
        &AtomicBool::new(false),
        &mut |_, _| {},
    )
    .expect("eval");
    assert!(s.top1_sub.expect("sub") >= s.top1_all);
    assert!(
        s.top1_sub.expect("sub") > s.top1_all + 1.0,
        "bird/cat/dog confuse with other classes"
    );
}
