//! Random creation has PyTorch's distributions but not its values (the generators
//! differ), so these check properties: permutations, ranges, moments, determinism,
//! and that a host tensor from seed `k` is what a compiled step draws from key `k`.

use std::collections::HashMap;

use aotgrad::prelude::*;
use aotgrad::runtime::cpu::{self, CpuOptions};

#[test]
fn randperm_is_a_permutation_and_a_function_of_its_seed() {
    for n in [0usize, 1, 2, 10, 1000] {
        let p = Tensor::randperm(7, n).unwrap();
        let mut v = p.as_i64().unwrap().to_vec();
        v.sort_unstable();
        assert_eq!(v, (0..n as i64).collect::<Vec<_>>(), "n = {n}");
        assert_eq!(Tensor::randperm(7, n).unwrap(), p, "same seed, same order");
    }
    assert_ne!(
        Tensor::randperm(1, 1000).unwrap(),
        Tensor::randperm(2, 1000).unwrap()
    );
}

#[test]
fn randint_covers_its_half_open_range_uniformly() {
    let t = Tensor::randint(3, 1, 100, &[20_000]).unwrap();
    let v = t.as_i64().unwrap();
    assert!(v.iter().all(|&x| (1..100).contains(&x)));
    let mut seen = [0usize; 100];
    for &x in v {
        seen[x as usize] += 1;
    }
    // 99 values, ~202 hits each: every value appears, none wildly over.
    assert!(seen[1..].iter().all(|&c| c > 120 && c < 300), "{seen:?}");
    let big = Tensor::randint(3, -5, 5, &[1000]).unwrap();
    assert!(big.as_i64().unwrap().iter().all(|&x| (-5..5).contains(&x)));
}

#[test]
fn rand_and_randn_have_their_moments() {
    let u = Tensor::rand(11, &[100_000], DType::F32).unwrap();
    assert!(u.as_f32().unwrap().iter().all(|&x| (0.0..1.0).contains(&x)));
    let mean = u.mean(Axes::All, false).unwrap().item().unwrap();
    assert!((mean - 0.5).abs() < 0.01, "{mean}");
    let z = Tensor::randn(11, &[100_000], DType::F64).unwrap();
    let (m, s) = (
        z.mean(Axes::All, false).unwrap().item().unwrap(),
        z.std(Axes::All, 1, false).unwrap().item().unwrap(),
    );
    assert!(m.abs() < 0.02 && (s - 1.0).abs() < 0.02, "{m} {s}");
    let like = u.rand_like(11).unwrap();
    assert_eq!(like, u, "rand_like is rand of the same shape and dtype");
}

#[test]
fn host_random_tensors_are_the_compiled_steps_draws() {
    let g = GraphBuilder::new("draw");
    let key = g.input("key", DType::I64, shape![]);
    g.output("u", g.rand(key, DType::F32, shape![3, 5]));
    g.output("p", g.randperm(key, 9));
    let graph = g.finish().unwrap();
    let feeds = HashMap::from([("key".to_string(), Tensor::from_i64(&[42], &[]).unwrap())]);
    let compiled = cpu::run_once(&graph, &feeds, CpuOptions::default()).unwrap();
    assert_eq!(
        compiled.output("u").unwrap(),
        &Tensor::rand(42, &[3, 5], DType::F32).unwrap()
    );
    assert_eq!(
        compiled.output("p").unwrap(),
        &Tensor::randperm(42, 9).unwrap()
    );
}
