//! Course part 3: image transforms and image reading against torchvision
//! (`tests/fixtures/vision/vision.safetensors`, from `tools/fixtures/gen_vision.py`),
//! and the CIFAR-10 binary reader on a file generated here.

use std::collections::HashMap;
use std::path::Path;

use aotgrad::data::cifar10;
use aotgrad::data::image::decode_image;
use aotgrad::data::mnist::Split;
use aotgrad::data::{
    CenterCrop, ConvertImageDtype, DataLoader, Dataset, Normalize, RandomHorizontalFlip,
    RandomVerticalFlip, Resize, Rng, ToFloat, Transform,
};
use aotgrad::ir::Data;
use aotgrad::prelude::*;
use aotgrad::tensor_file::read_safetensors;

fn fixtures() -> HashMap<String, Tensor> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision/vision.safetensors");
    read_safetensors(&path).unwrap().0.into_iter().collect()
}

fn apply(t: &dyn Transform, x: &Tensor) -> Tensor {
    t.apply(x.clone(), &mut Rng::new(0)).unwrap()
}

/// Largest |a - b| (shapes must agree).
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_f64_vec()
        .iter()
        .zip(b.to_f64_vec())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn transforms_match_torchvision() {
    let fx = fixtures();
    let (img, tall) = (&fx["img"], &fx["tall"]);
    let cases: Vec<(&str, Box<dyn Transform>, &Tensor)> = vec![
        ("resize_down", Box::new(Resize::exact(12, 16)), img),
        ("resize_up", Box::new(Resize::exact(40, 50)), img),
        ("resize_width_only", Box::new(Resize::exact(20, 45)), img),
        ("resize_mixed", Box::new(Resize::exact(9, 61)), img),
        ("resize_short", Box::new(Resize::shorter_side(10)), img),
        ("resize_short_tall", Box::new(Resize::shorter_side(7)), tall),
        ("center_crop", Box::new(CenterCrop::square(8)), img),
        ("center_crop_odd", Box::new(CenterCrop { h: 7, w: 9 }), img),
        (
            "center_crop_pad",
            Box::new(CenterCrop { h: 25, w: 33 }),
            img,
        ),
        ("big_resize", Box::new(Resize::exact(51, 51)), &fx["big"]),
    ];
    for (name, t, x) in cases {
        let got = apply(t.as_ref(), x);
        let want = &fx[name];
        assert_eq!(got.shape(), want.shape(), "{name}");
        // f32 throughout; the antialiased resize sums its taps in PyTorch's order, so
        // the rest is last-bit rounding of the weights.
        let d = max_diff(&got, want);
        assert!(d < 2e-6, "{name}: max |diff| {d}");
    }
    // The flips are batch transforms: one image as a batch of one.
    let batch = img.unsqueeze(0).unwrap();
    let h = apply(&RandomHorizontalFlip(1.0), &batch)
        .squeeze(0)
        .unwrap();
    assert_eq!(&h, &fx["hflip"]);
    let v = apply(&RandomVerticalFlip(1.0), &batch).squeeze(0).unwrap();
    assert_eq!(&v, &fx["vflip"]);
    // Normalize is per channel of a batch [N, C, ...].
    let n = apply(&Normalize::new(&[0.5; 3], &[0.5; 3]), &batch)
        .squeeze(0)
        .unwrap();
    assert!(max_diff(&n, &fx["normalize"]) < 1e-7);
    // The course's Normalize([0.5]*3, [0.5]*3): 0.6039 -> 0.2078.
    let n = apply(
        &Normalize::new(&[0.5; 3], &[0.5; 3]),
        &Tensor::full(aotgrad::ir::Scalar::F32(0.6039), &[1, 3, 1, 1]),
    );
    assert!(max_diff(&n.view(&[3, 1, 1]).unwrap(), &fx["normalize_course"]) < 1e-7);
    assert!((n.as_f32().unwrap()[0] - 0.2078).abs() < 1e-4);
    // ConvertImageDtype both ways, exactly.
    assert_eq!(
        &apply(&ConvertImageDtype(DType::F32), &fx["img_u8"]),
        &fx["convert_float"]
    );
    assert_eq!(apply(&ToFloat, &fx["img_u8"]), fx["convert_float"]);
    assert_eq!(
        &apply(&ConvertImageDtype(DType::U8), img),
        &fx["convert_u8"]
    );
}

#[test]
fn transform_mistakes_are_errors() {
    let u8img = Tensor::zeros(DType::U8, &[3, 4, 4]);
    let e = Resize::exact(2, 2)
        .apply(u8img, &mut Rng::new(0))
        .unwrap_err();
    assert!(e.to_string().contains("ConvertImageDtype(F32)"), "{e}");
    let e = Resize::exact(0, 2)
        .apply(Tensor::zeros(DType::F32, &[4, 4]), &mut Rng::new(0))
        .unwrap_err();
    assert!(e.to_string().contains("sizes must be positive"), "{e}");
    let e = CenterCrop::square(2)
        .apply(Tensor::zeros(DType::F32, &[4]), &mut Rng::new(0))
        .unwrap_err();
    assert!(e.to_string().contains("[..., H, W]"), "{e}");
    let e = ConvertImageDtype(DType::I64)
        .apply(Tensor::zeros(DType::F32, &[2, 2]), &mut Rng::new(0))
        .unwrap_err();
    assert!(
        e.to_string().contains("ConvertImageDtype from f32 to i64"),
        "{e}"
    );
}

fn bytes(t: &Tensor) -> Vec<u8> {
    match t.data() {
        Data::U8(v) => v.clone(),
        d => panic!("not u8: {:?}", d.dtype()),
    }
}

#[test]
fn png_and_jpeg_decode_as_torchvision_reads_them() {
    let fx = fixtures();
    for name in ["png_rgb", "png_grey", "png_rgba"] {
        let got = decode_image(Path::new(name), &bytes(&fx[&format!("{name}.bytes")])).unwrap();
        assert_eq!(
            &got,
            &fx[&format!("{name}.decoded")],
            "{name}: PNG is lossless"
        );
    }
    // JPEG decoders differ in their IDCT and upsampling rounding: libjpeg-turbo
    // (torchvision) and jpeg-decoder agree within a few levels.
    let got = decode_image(Path::new("jpeg"), &bytes(&fx["jpeg.bytes"])).unwrap();
    let want = &fx["jpeg.decoded"];
    let d = max_diff(&got, want);
    let mean = got
        .to_f64_vec()
        .iter()
        .zip(want.to_f64_vec())
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / got.len() as f64;
    assert!(d <= 8.0 && mean < 1.0, "JPEG: max diff {d}, mean {mean}");
    let e = decode_image(Path::new("x.gif"), b"GIF89a....").unwrap_err();
    assert!(e.to_string().contains("x.gif"), "{e}");
    let e = decode_image(Path::new("t.png"), &bytes(&fx["png_rgb.bytes"])[..40]).unwrap_err();
    assert!(e.to_string().contains("cannot decode"), "{e}");
}

/// Writes a CIFAR-10 binary batch of `n` records: record `i` has label `i % 10` and
/// pixel `p` of it is `(i + p) % 256`.
fn write_batch(path: &Path, n: usize) {
    let mut b = Vec::with_capacity(n * cifar10::RECORD);
    for i in 0..n {
        b.push((i % 10) as u8);
        b.extend((0..3072).map(|p| ((i + p) % 256) as u8));
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn cifar10_binary_batches_read_as_torchvision_lays_them_out() {
    let root = std::env::temp_dir().join(format!("aotgrad-cifar-{}", std::process::id()));
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    // Absent: the error names the files and the download.
    let e = cifar10::load(&root, Split::Test).unwrap_err().to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("cifar-10-binary.tar.gz"),
        "{e}"
    );
    write_batch(&dir.join("test_batch.bin"), 7);
    let test = cifar10::load(&root, Split::Test).unwrap();
    assert_eq!(test.len(), 7);
    let (x, y) = (&test.x, &test.y);
    assert_eq!(x.shape(), &[7, 3, 32, 32]);
    assert_eq!(y.as_i64().unwrap(), &[0, 1, 2, 3, 4, 5, 6]);
    // Record 3, green plane (offset 1024), row 2, column 5: pixel 1024 + 69.
    let px = x.at(&[3, 1, 2, 5]).unwrap();
    assert_eq!(px, ((3 + 1024 + 2 * 32 + 5) % 256) as f64);
    // The course's DataLoader: batch 4, shuffled, last batch kept: [4,3,32,32] then 3.
    let t = ToFloat;
    let sizes: Vec<Vec<usize>> = DataLoader::new(&test, 4)
        .shuffle(1)
        .transform(&t)
        .epoch(0)
        .map(|b| b.unwrap().x.shape().to_vec())
        .collect();
    assert_eq!(sizes, vec![vec![4, 3, 32, 32], vec![3, 3, 32, 32]]);
    // The training split wants all five batches.
    for i in 1..=4 {
        write_batch(&dir.join(format!("data_batch_{i}.bin")), 2);
    }
    let e = cifar10::load(&root, Split::Train).unwrap_err().to_string();
    assert!(e.contains("data_batch_5.bin"), "{e}");
    write_batch(&dir.join("data_batch_5.bin"), 2);
    assert_eq!(cifar10::load(&root, Split::Train).unwrap().len(), 10);
    // A truncated file and a bad label are corrupt, with the file named.
    std::fs::write(dir.join("test_batch.bin"), [0u8; 100]).unwrap();
    let e = cifar10::load(&root, Split::Test).unwrap_err().to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("3073-byte"),
        "{e}"
    );
    let mut bad = vec![11u8];
    bad.extend([0u8; 3072]);
    std::fs::write(dir.join("test_batch.bin"), bad).unwrap();
    let e = cifar10::load(&root, Split::Test).unwrap_err().to_string();
    assert!(e.contains("label 11"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}
