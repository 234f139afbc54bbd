//! The course's data and tooling lessons (part 3):
//!
//! - **P11, the CIFAR-10 loader walk-through**: `CIFAR10(root, train=False,
//!   transform=ToTensor())`, `test_data[0]` is a `[3, 32, 32]` image with target 3, and
//!   a DataLoader of batch 4 (shuffled, last batch kept) yields `[4, 3, 32, 32]` images
//!   and 4 targets. CIFAR-10 is not bundled (163 MB): with `--cifar-root DIR` holding
//!   `cifar-10-batches-bin/` the real set is read; without it the reader's error says
//!   where to put it, and the walk-through continues on a small generated file in the
//!   same binary format (first record a "cat", as the real test set's).
//! - **Transforms** on a 940x940 picture read from PNG and JPEG (`--image PATH`, or a
//!   generated one): `ToTensor`, `Normalize([0.5]*3, [0.5]*3)` (0.6039 -> 0.2078),
//!   `Resize((512, 512))`, `Resize(512)`, `RandomCrop(512)`, `CenterCrop(512)`, a
//!   horizontal flip, `ConvertImageDtype(float)`.
//! - **TensorBoard**: `add_scalar("y = x", i, i)` for i < 100, into `--tensorboard DIR`
//!   (a temporary directory when not given).

use std::path::{Path, PathBuf};

use aotgrad::cli::args::{ExampleSpec, TrainArgs};
use aotgrad::cli::runlog::RunLog;
use aotgrad::cli::torch_print::{torch_size, torch_str};
use aotgrad::data::image::read_image;
use aotgrad::data::mnist::Split;
use aotgrad::data::{
    CenterCrop, Compose, ConvertImageDtype, DataLoader, Dataset, Normalize, RandomCrop,
    RandomHorizontalFlip, Resize, Rng, ToFloat, Transform, cifar10,
};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "The course's data lessons: CIFAR-10 loading (P11), image transforms, TensorBoard"
)]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
    /// Directory holding `cifar-10-batches-bin/` (the real CIFAR-10).
    #[arg(long, value_name = "DIR", default_value = "data/cifar10")]
    cifar_root: PathBuf,
    /// A PNG or JPEG to transform (default: a generated 940x940 picture).
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "data_lessons",
    takes: &[&["--seed", "--tensorboard", "--check"]],
    defaults: &[],
};

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> R<()> {
    let cli = SPEC.parse::<Cli>(|c| &c.train);
    let a = &cli.train;
    let scratch = std::env::temp_dir().join(format!("aotgrad-data-lessons-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = lessons(&cli, a, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn lessons(cli: &Cli, a: &TrainArgs, scratch: &Path) -> R<()> {
    let real = cifar(&cli.cifar_root, scratch, a.seed)?;
    let (img_shape, normalized) = transforms(cli.image.as_deref(), scratch, a.seed)?;
    let events = tensorboard(
        a.tensorboard
            .clone()
            .unwrap_or_else(|| scratch.join("runs")),
    )?;
    println!(
        "final: cifar_real={real} image_channels={} normalized_first_pixel={normalized:.4} tensorboard_events={events}",
        img_shape[0]
    );
    Ok(())
}

/// P11. Returns whether the real CIFAR-10 was read.
fn cifar(root: &Path, scratch: &Path, seed: u64) -> R<bool> {
    println!("== P11: CIFAR-10 ==");
    let (test, real) = match cifar10::load(root, Split::Test) {
        Ok(t) => (t, true),
        Err(e) => {
            println!("{e}");
            let dir = scratch.join("cifar-10-batches-bin");
            std::fs::create_dir_all(&dir)?;
            // 10 records in the real format: labels 3, 8, 8, 0, 6, ... (the real
            // test set's first ten), pixels a gradient per record.
            let labels = [3u8, 8, 8, 0, 6, 6, 1, 6, 3, 1];
            let mut bytes = Vec::new();
            for (i, &l) in labels.iter().enumerate() {
                bytes.push(l);
                bytes.extend((0..3072).map(|p| ((p / 12 + 25 * i) % 256) as u8));
            }
            std::fs::write(dir.join("test_batch.bin"), bytes)?;
            println!(
                "walking through a generated {}-record file in the same format",
                labels.len()
            );
            (cifar10::load(scratch, Split::Test)?, false)
        }
    };
    println!("len(test_data) = {}", test.len());
    let img = ToFloat.apply(test.x.narrow(0, 0, 1)?.squeeze(0)?, &mut Rng::new(0))?;
    let target = test.y.at(&[0])? as usize;
    println!(
        "test_data[0]: image {} (min {:.4}, max {:.4}), target {target} ({})",
        torch_size(img.shape()),
        img.min(Axes::All, false)?.item().unwrap_or(f64::NAN),
        img.max(Axes::All, false)?.item().unwrap_or(f64::NAN),
        cifar10::CLASSES[target]
    );
    let to_tensor = ToFloat;
    let loader = DataLoader::new(&test, 4)
        .shuffle(seed)
        .transform(&to_tensor);
    for (i, b) in loader.epoch(0).enumerate() {
        let b = b?;
        println!(
            "batch {i}: imgs {}, targets {}",
            torch_size(b.x.shape()),
            torch_str(&b.y)
        );
    }
    Ok(real)
}

/// A 940x940 RGB picture (a smooth colour field) whose first pixel is 154 = 0.6039 *
/// 255 in every channel, the course's value.
fn picture() -> image::RgbImage {
    image::RgbImage::from_fn(940, 940, |x, y| {
        if x == 0 && y == 0 {
            return image::Rgb([154, 154, 154]);
        }
        let r = (x * 255 / 939) as u8;
        let g = (y * 255 / 939) as u8;
        let b = ((x + y) * 255 / 1878) as u8;
        image::Rgb([r, g, b])
    })
}

/// The transforms lesson; returns the image's shape and its first normalised value.
fn transforms(path: Option<&Path>, scratch: &Path, seed: u64) -> R<(Vec<usize>, f64)> {
    println!("== transforms ==");
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => {
            let pic = picture();
            let png = scratch.join("picture.png");
            pic.save(&png)?;
            let jpg = scratch.join("picture.jpg");
            pic.save(&jpg)?;
            let (a, b) = (read_image(&png)?, read_image(&jpg)?);
            let diff = a
                .cast(DType::F32)
                .sub(&b.cast(DType::F32))?
                .abs()?
                .mean(Axes::All, false)?
                .item()
                .unwrap_or(f64::NAN);
            println!(
                "read_image(picture.png): {} u8; read_image(picture.jpg): {}, mean |png - jpg| = {diff:.2} levels (JPEG is lossy)",
                torch_size(a.shape()),
                torch_size(b.shape())
            );
            png
        }
    };
    let img = read_image(&path)?;
    let channels = img.shape()[0];
    // Transforms take batches [N, C, H, W]: one picture is a batch of one.
    let batch = img.unsqueeze(0)?;
    let mut rng = Rng::new(seed);
    let x = ToFloat.apply(batch.clone(), &mut rng)?;
    println!(
        "ToTensor(): {}, first value {:.4}",
        torch_size(&x.shape()[1..]),
        x.as_f32()?[0]
    );
    let mean = vec![0.5; channels];
    let norm = Normalize::new(&mean, &mean).apply(x.clone(), &mut rng)?;
    let first = norm.as_f32()?[0] as f64;
    println!("Normalize([0.5]*{channels}, [0.5]*{channels}): first value {first:.4}");
    let shape = |t: &dyn Transform| -> R<String> {
        let y = t.apply(x.clone(), &mut Rng::new(seed))?;
        Ok(torch_size(&y.shape()[1..]))
    };
    println!("Resize((512, 512)): {}", shape(&Resize::exact(512, 512))?);
    println!("Resize(512): {}", shape(&Resize::shorter_side(512))?);
    println!(
        "RandomCrop(512): {}",
        shape(&RandomCrop {
            size: 512,
            padding: 0
        })?
    );
    println!("CenterCrop(512): {}", shape(&CenterCrop::square(512))?);
    let flipped = RandomHorizontalFlip(1.0).apply(x.clone(), &mut rng)?;
    let w = x.shape()[3];
    println!(
        "RandomHorizontalFlip(p=1): first value {:.4} = the old last of row 0, {:.4}",
        flipped.as_f32()?[0],
        x.as_f32()?[w - 1]
    );
    let chain = Compose::new()
        .then(ConvertImageDtype(DType::F32))
        .then(Resize::shorter_side(256))
        .then(CenterCrop::square(224))
        .then(Normalize::new(&mean, &mean));
    let y = chain.apply(batch, &mut rng)?;
    println!(
        "Compose([ConvertImageDtype(float), Resize(256), CenterCrop(224), Normalize]): {} {}",
        torch_size(y.shape()),
        aotgrad::cli::torch_print::torch_dtype(y.dtype())
    );
    Ok((img.shape().to_vec(), first))
}

/// `writer.add_scalar("y = x", i, i)` for i < 100; returns the events written.
fn tensorboard(dir: PathBuf) -> R<usize> {
    println!("== TensorBoard ==");
    let mut log = RunLog::new(&["y = x"]).tensorboard(&dir)?;
    for i in 0..100u64 {
        log.record(i, 0, &[("y = x", i as f64)])?;
    }
    log.flush()?;
    println!(
        "add_scalar(\"y = x\", i, i) for i < 100 -> {} (tensorboard --logdir {})",
        dir.display(),
        dir.display()
    );
    Ok(100)
}
