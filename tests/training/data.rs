//! Data loading: the bundled MNIST is intact, loaders shuffle by permutation, short
//! batches are kept unless dropped, corrupt files give typed errors (never panics).

use std::collections::HashSet;
use std::io::Write;

use aotgrad::data::mnist::{self, Split};
use aotgrad::data::{
    DataError, DataLoader, Dataset, MinMax, Normalize, RandomCrop, RandomHorizontalFlip, Rng,
    Shard, TensorDataset, ToFloat, Transform, ZScore, csv, random_split,
};
use aotgrad::prelude::*;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("aotgrad-data-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn bundled_mnist_has_the_documented_label_counts() {
    let train = mnist::load(&mnist::bundled_dir(), Split::Train).unwrap();
    let test = mnist::load(&mnist::bundled_dir(), Split::Test).unwrap();
    assert_eq!(train.x.shape(), &[60000, 1, 28, 28]);
    assert_eq!(test.x.shape(), &[10000, 1, 28, 28]);
    let counts = |d: &TensorDataset| {
        let mut c = [0usize; 10];
        for l in d.y.as_i64().unwrap() {
            c[*l as usize] += 1;
        }
        c
    };
    assert_eq!(
        counts(&train),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        counts(&test),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(
        &train.y.as_i64().unwrap()[..10],
        &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    );
}

#[test]
fn corrupt_idx_files_are_errors() {
    let p = tmp("images");
    let mut good = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    good.extend([1u8; 8]);
    assert_eq!(
        mnist::parse_images(&p, &good).unwrap().shape(),
        &[2, 1, 2, 2]
    );
    let e = mnist::parse_images(&p, &good[..20])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("promises 2 images of 2x2 (8 bytes) but the file holds 4"),
        "{e}"
    );
    let mut bad = good.clone();
    bad[3] = 1;
    let e = mnist::parse_images(&p, &bad).unwrap_err().to_string();
    assert!(
        e.contains("magic number 0x00000801, expected 0x00000803"),
        "{e}"
    );
    let e = mnist::parse_images(&p, &good[..5]).unwrap_err().to_string();
    assert!(e.contains("too short"), "{e}");
    // 2^22 images of 2^21 x 2^21 is 2^64 pixels, 0 modulo 2^64: an empty payload
    // used to satisfy it.
    let huge = [0, 0, 8, 3, 0, 0x40, 0, 0, 0, 0x20, 0, 0, 0, 0x20, 0, 0];
    let e = mnist::parse_images(&p, &huge).unwrap_err().to_string();
    assert!(
        e.contains("promises 4194304 images of 2097152x2097152 (18446744073709551616 bytes)"),
        "{e}"
    );
    let e = mnist::parse_labels(&p, &[0, 0, 8, 1, 0, 0, 0, 2, 3, 12])
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 1 is 12"), "{e}");

    // The bundled test images with trailing garbage after the gzip stream.
    let junk_dir = tmp("junk_dir");
    std::fs::create_dir_all(&junk_dir).unwrap();
    for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(mnist::bundled_dir().join(f), junk_dir.join(f)).unwrap();
    }
    let labels = junk_dir.join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes.extend_from_slice(b"trailing garbage");
    std::fs::write(&labels, bytes).unwrap();
    let e = mnist::load(&junk_dir, Split::Test).unwrap_err();
    assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("after the gzip data"), "{e}");

    // A truncated gzip stream.
    let dir = tmp("corrupt_dir");
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::fs::read(mnist::bundled_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), &src[..src.len() / 2]).unwrap();
    std::fs::copy(
        mnist::bundled_dir().join("t10k-images-idx3-ubyte.gz"),
        dir.join("t10k-images-idx3-ubyte.gz"),
    )
    .unwrap();
    let e = mnist::load(&dir, Split::Test).unwrap_err();
    assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    let e = mnist::load(&dir, Split::Train).unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte[.gz]"), "{e}");
}

fn numbered(n: usize) -> TensorDataset {
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let y: Vec<i64> = (0..n as i64).collect();
    TensorDataset::new(
        Tensor::from_f32(&x, &[n, 1]).unwrap(),
        Tensor::from_i64(&y, &[n]).unwrap(),
    )
    .unwrap()
}

#[test]
fn loader_shuffles_by_permutation_and_keeps_or_drops_the_short_batch() {
    let ds = numbered(10);
    let l = DataLoader::new(&ds, 4).shuffle(7);
    assert_eq!(l.num_batches(), 3);
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    for b in l.epoch(0) {
        let b = b.unwrap();
        sizes.push(b.y.len());
        seen.extend(b.y.as_i64().unwrap().iter().copied());
        // inputs and targets stay paired
        assert_eq!(b.x.to_f64_vec(), b.y.to_f64_vec());
    }
    assert_eq!(sizes, [4, 4, 2]);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<i64>>());
    assert_ne!(seen, (0..10).collect::<Vec<i64>>(), "shuffled");
    assert_eq!(l.order(0), l.order(0), "deterministic");
    assert_ne!(l.order(0), l.order(1), "a new order each epoch");
    let d = DataLoader::new(&ds, 4).drop_last(true);
    assert_eq!(d.num_batches(), 2);
    assert_eq!(d.epoch(0).count(), 2);
    assert_eq!(
        DataLoader::new(&ds, 4).order(3),
        (0..10).collect::<Vec<_>>()
    );
}

/// `DistributedSampler(shuffle=False)`'s parts, as PyTorch 2.15 gives them, and the
/// shuffled split: every rank splits the same order, disjointly up to the padding.
#[test]
fn shards_split_every_epoch_as_distributed_sampler() {
    let parts = |n: usize, world: usize, drop_last: bool| -> Vec<Vec<usize>> {
        (0..world)
            .map(|r| {
                let s = Shard::new(r, world).unwrap().drop_last(drop_last);
                s.select(&(0..n).collect::<Vec<_>>())
            })
            .collect()
    };
    assert_eq!(
        parts(10, 3, false),
        [vec![0, 3, 6, 9], vec![1, 4, 7, 0], vec![2, 5, 8, 1]]
    );
    assert_eq!(
        parts(10, 3, true),
        [vec![0, 3, 6], vec![1, 4, 7], vec![2, 5, 8]]
    );
    assert_eq!(parts(2, 3, false), [vec![0], vec![1], vec![0]]);
    assert_eq!(parts(1, 4, false), [vec![0], vec![0], vec![0], vec![0]]);
    assert_eq!(
        parts(7, 7, false),
        (0..7).map(|i| vec![i]).collect::<Vec<_>>()
    );
    assert_eq!(
        parts(2, 3, true),
        [vec![], vec![], vec![]] as [Vec<usize>; 3]
    );

    let ds = numbered(12);
    let mut all = Vec::new();
    for r in 0..3 {
        let l = DataLoader::new(&ds, 2)
            .shuffle(5)
            .shard(Shard::new(r, 3).unwrap());
        assert_eq!(l.num_batches(), 2);
        let order = l.order(4);
        assert_eq!(order.len(), 4);
        for b in l.epoch(4) {
            let b = b.unwrap();
            assert_eq!(b.x.to_f64_vec(), b.y.to_f64_vec());
            all.extend(b.y.as_i64().unwrap().iter().map(|&v| v as usize));
        }
    }
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..12).collect::<Vec<_>>(), "disjoint and complete");
    let whole = DataLoader::new(&ds, 2).shuffle(5).order(4);
    let interleaved: Vec<usize> = (0..4)
        .flat_map(|i| (0..3).map(move |r| (i, r)))
        .map(|(i, r)| {
            DataLoader::new(&ds, 2)
                .shuffle(5)
                .shard(Shard::new(r, 3).unwrap())
                .order(4)[i]
        })
        .collect();
    assert_eq!(
        interleaved, whole,
        "rank r takes every third of the same order"
    );
    let e = Shard::new(3, 3).unwrap_err().to_string();
    assert!(e.contains("rank 3 of a world of 3"), "{e}");
}

#[test]
fn random_split_partitions() {
    let ds = numbered(10);
    let parts = random_split(&ds, &[7, 3], 1).unwrap();
    let mut all: Vec<i64> = parts
        .iter()
        .flat_map(|p| p.y.as_i64().unwrap().to_vec())
        .collect();
    assert_eq!((parts[0].len(), parts[1].len()), (7, 3));
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    assert!(
        random_split(&ds, &[5, 3], 1)
            .unwrap_err()
            .to_string()
            .contains("do not sum")
    );
    let p = Rng::new(3).permutation(1000);
    assert_eq!(p.iter().collect::<HashSet<_>>().len(), 1000);
}

#[test]
fn transforms_match_hand_computed_values() {
    let mut r = Rng::new(0);
    let px = Tensor::new(&[1, 1, 1, 2], aotgrad::ir::Data::U8(vec![0, 255])).unwrap();
    let f = ToFloat.apply(px, &mut r).unwrap();
    assert_eq!(f.as_f32().unwrap(), &[0.0, 1.0]);
    let n = Normalize::new(&[0.5], &[0.25]).apply(f, &mut r).unwrap();
    assert_eq!(n.as_f32().unwrap(), &[-2.0, 2.0]);

    // Fitted on training data, reused on other data.
    let train = Tensor::from_f32(&[1.0, 10.0, 3.0, 30.0], &[2, 2]).unwrap();
    let z = ZScore::fit(&train).unwrap();
    assert_eq!(z.mean, vec![2.0, 20.0]);
    assert!((z.std[0] - 2f64.sqrt()).abs() < 1e-12, "unbiased std");
    let other = z
        .apply(Tensor::from_f32(&[2.0, 20.0], &[1, 2]).unwrap(), &mut r)
        .unwrap();
    assert_eq!(other.as_f32().unwrap(), &[0.0, 0.0]);
    let m = MinMax::fit(&train).unwrap();
    let t = m
        .apply(Tensor::from_f32(&[2.0, 30.0], &[1, 2]).unwrap(), &mut r)
        .unwrap();
    assert_eq!(t.as_f32().unwrap(), &[0.5, 1.0]);

    let img = Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
    let flipped = RandomHorizontalFlip(1.0)
        .apply(img.clone(), &mut r)
        .unwrap();
    assert_eq!(flipped.as_f32().unwrap(), &[2.0, 1.0, 4.0, 3.0]);
    let crop = RandomCrop {
        size: 2,
        padding: 1,
    }
    .apply(img.clone(), &mut r)
    .unwrap();
    assert_eq!(crop.shape(), &[1, 1, 2, 2]);
    let kept: f32 = crop.as_f32().unwrap().iter().sum();
    assert!(kept <= 10.0);
    let same = RandomCrop {
        size: 2,
        padding: 0,
    }
    .apply(img.clone(), &mut r)
    .unwrap();
    assert_eq!(same, img);
    assert!(
        Normalize::new(&[0.5], &[0.2])
            .apply(Tensor::from_i64(&[1], &[1]).unwrap(), &mut r)
            .is_err()
    );
}

#[test]
fn csv_reading_and_errors() {
    let p = tmp("t.csv");
    std::fs::write(&p, "a,b\n1,2.5\n3,4\n").unwrap();
    let t = csv::read_numeric(&p, true).unwrap();
    assert_eq!(
        (t.shape(), t.as_f32().unwrap()),
        (&[2usize, 2][..], &[1.0f32, 2.5, 3.0, 4.0][..])
    );
    std::fs::write(&p, "1,2\n3,x\n").unwrap();
    let e = csv::read_numeric(&p, false).unwrap_err().to_string();
    assert!(e.ends_with(":2: column 2 is \"x\", not a number"), "{e}");
    std::fs::write(&p, "1,2\n3\n").unwrap();
    assert!(matches!(
        csv::read_numeric(&p, false),
        Err(DataError::Csv { .. })
    ));
    // gzip is read transparently
    let gz = tmp("t.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(b"5,6\n").unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    assert_eq!(
        csv::read_numeric(&gz, false).unwrap().as_f32().unwrap(),
        &[5.0, 6.0]
    );
    // Two members (`cat a.gz b.gz`) are one stream; bytes after the last member are
    // refused (they used to be ignored silently).
    let member = |text: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text).unwrap();
        enc.finish().unwrap()
    };
    std::fs::write(&gz, [member(b"5,6\n"), member(b"7,8\n")].concat()).unwrap();
    assert_eq!(
        csv::read_numeric(&gz, false).unwrap().as_f32().unwrap(),
        &[5.0, 6.0, 7.0, 8.0]
    );
    for junk in [&b"garbage"[..], &[0u8; 16], &member(b"9,9\n")[..10]] {
        std::fs::write(&gz, [member(b"5,6\n"), junk.to_vec()].concat()).unwrap();
        let e = csv::read_numeric(&gz, false).unwrap_err();
        assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    }
    // Non-finite numbers in a numeric table are refused, naming the column.
    for cell in ["nan", "NaN", "inf", "-infinity", "1e39"] {
        std::fs::write(&p, format!("a,b\n1,2\n3,{cell}\n")).unwrap();
        let e = csv::read_numeric(&p, true).unwrap_err().to_string();
        assert!(
            e.ends_with(&format!(
                ":3: column 2 (\"b\") is \"{cell}\", not a finite number (fill or drop \
                 missing values before loading)"
            )),
            "{e}"
        );
    }
    let titanic = csv::read_table(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/titanic.csv"),
        true,
    )
    .unwrap();
    assert_eq!(titanic.rows.len(), 891);
    assert_eq!(
        titanic.rows[0][titanic.column("Name").unwrap()],
        "Braund, Mr. Owen Harris"
    );
}
