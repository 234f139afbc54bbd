//! Direct convolution against im2col + GEMM (the `gemm` crate, what aotgrad's CPU
//! backend runs) for LeNet's two convolutions at batch 64: forward and weight
//! gradient, one thread. The direct loops are plain Rust written so that LLVM
//! vectorises their inner loop over output columns; built with
//! `-C target-cpu=native` they are an upper bound for what the Cranelift emitter
//! (128-bit vectors, no unrolling by itself) would reach with the same loop order.
//!
//! `RUSTFLAGS="-C target-cpu=native" cargo run --release` (see docs/decisions/conv.md).

use std::hint::black_box;
use std::time::Instant;

#[derive(Clone, Copy)]
struct Conv {
    name: &'static str,
    n: usize,
    c: usize,
    h: usize,
    o: usize,
    k: usize,
}

impl Conv {
    fn oh(&self) -> usize {
        self.h - self.k + 1
    }
    fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }
    fn flops(&self) -> f64 {
        2.0 * (self.n * self.o * self.oh() * self.oh() * self.ckk()) as f64
    }
}

fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// Median seconds of `reps` runs of `f`.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// `cols[(c, i, j), (y, x)] = x[c, y + i, x + j]` for one sample.
fn im2col(cv: &Conv, x: &[f32], cols: &mut [f32]) {
    let (h, oh, k) = (cv.h, cv.oh(), cv.k);
    let mut r = 0;
    for c in 0..cv.c {
        for i in 0..k {
            for j in 0..k {
                let row = &mut cols[r * oh * oh..(r + 1) * oh * oh];
                for y in 0..oh {
                    let src = &x[c * h * h + (y + i) * h + j..][..oh];
                    row[y * oh..(y + 1) * oh].copy_from_slice(src);
                }
                r += 1;
            }
        }
    }
}

/// `c[m, n] = a[m, k] @ b[k, n]` (row-major), or `a @ b^T` with `b` as `[n, k]`.
fn sgemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], b_t: bool, c: &mut [f32]) {
    let (brs, bcs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the slices hold m*k, k*n and m*n elements at the strides given.
    unsafe {
        gemm::gemm(
            m, n, k, c.as_mut_ptr(), 1, n as isize, false,
            a.as_ptr(), 1, k as isize, b.as_ptr(), bcs, brs,
            0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None,
        )
    }
}

fn forward_im2col(cv: &Conv, x: &[f32], w: &[f32], y: &mut [f32], cols: &mut [f32]) {
    let (l, ckk) = (cv.oh() * cv.oh(), cv.ckk());
    for s in 0..cv.n {
        im2col(cv, &x[s * cv.c * cv.h * cv.h..], cols);
        sgemm(cv.o, l, ckk, w, cols, false, &mut y[s * cv.o * l..(s + 1) * cv.o * l]);
    }
}

fn forward_direct(cv: &Conv, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (h, oh, k) = (cv.h, cv.oh(), cv.k);
    for s in 0..cv.n {
        let xs = &x[s * cv.c * h * h..(s + 1) * cv.c * h * h];
        for o in 0..cv.o {
            let out = &mut y[(s * cv.o + o) * oh * oh..(s * cv.o + o + 1) * oh * oh];
            out.fill(0.0);
            for c in 0..cv.c {
                for i in 0..k {
                    for j in 0..k {
                        let wv = w[((o * cv.c + c) * k + i) * k + j];
                        for r in 0..oh {
                            let src = &xs[c * h * h + (r + i) * h + j..][..oh];
                            let dst = &mut out[r * oh..(r + 1) * oh];
                            for (d, v) in dst.iter_mut().zip(src) {
                                *d += wv * v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dw[o, (c,i,j)] = sum over samples of dy[s][o, L] @ cols[s]^T`.
fn wgrad_im2col(cv: &Conv, x: &[f32], dy: &[f32], dw: &mut [f32], cols: &mut [f32], part: &mut [f32]) {
    let (l, ckk) = (cv.oh() * cv.oh(), cv.ckk());
    dw.fill(0.0);
    for s in 0..cv.n {
        im2col(cv, &x[s * cv.c * cv.h * cv.h..], cols);
        sgemm(cv.o, ckk, l, &dy[s * cv.o * l..(s + 1) * cv.o * l], cols, true, part);
        dw.iter_mut().zip(part.iter()).for_each(|(a, b)| *a += b);
    }
}

fn wgrad_direct(cv: &Conv, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (h, oh, k) = (cv.h, cv.oh(), cv.k);
    dw.fill(0.0);
    for s in 0..cv.n {
        let xs = &x[s * cv.c * h * h..(s + 1) * cv.c * h * h];
        for o in 0..cv.o {
            let g = &dy[(s * cv.o + o) * oh * oh..(s * cv.o + o + 1) * oh * oh];
            for c in 0..cv.c {
                for i in 0..k {
                    for j in 0..k {
                        let mut acc = [0.0f32; 8];
                        for r in 0..oh {
                            let src = &xs[c * h * h + (r + i) * h + j..][..oh];
                            let gr = &g[r * oh..(r + 1) * oh];
                            for (q, (a, b)) in gr.iter().zip(src).enumerate() {
                                acc[q % 8] += a * b;
                            }
                        }
                        dw[((o * cv.c + c) * k + i) * k + j] += acc.iter().sum::<f32>();
                    }
                }
            }
        }
    }
}

fn main() {
    let convs = [
        Conv { name: "conv1 1->10 k5 28x28", n: 64, c: 1, h: 28, o: 10, k: 5 },
        Conv { name: "conv2 10->20 k5 12x12", n: 64, c: 10, h: 12, o: 20, k: 5 },
    ];
    println!("| convolution (batch 64) | pass | im2col + gemm ms | direct ms | direct / im2col |");
    println!("|---|---|---|---|---|");
    for cv in convs {
        let (l, ckk) = (cv.oh() * cv.oh(), cv.ckk());
        let x = fill(cv.n * cv.c * cv.h * cv.h, 1);
        let w = fill(cv.o * ckk, 2);
        let dy = fill(cv.n * cv.o * l, 3);
        let mut y1 = vec![0.0; cv.n * cv.o * l];
        let mut y2 = vec![0.0; cv.n * cv.o * l];
        let mut cols = vec![0.0; ckk * l];
        let mut part = vec![0.0; cv.o * ckk];
        let reps = 41;
        let a = time(reps, || forward_im2col(&cv, &x, &w, black_box(&mut y1), &mut cols));
        let b = time(reps, || forward_direct(&cv, &x, &w, black_box(&mut y2)));
        let err = y1.iter().zip(&y2).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-3, "forward disagrees by {err}");
        println!("| {} | forward | {:.3} | {:.3} | {:.2}x |", cv.name, a * 1e3, b * 1e3, b / a);
        let mut dw1 = vec![0.0; cv.o * ckk];
        let mut dw2 = vec![0.0; cv.o * ckk];
        let a = time(reps, || wgrad_im2col(&cv, &x, &dy, black_box(&mut dw1), &mut cols, &mut part));
        let b = time(reps, || wgrad_direct(&cv, &x, &dy, black_box(&mut dw2)));
        let err = dw1.iter().zip(&dw2).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-2, "weight gradient disagrees by {err}");
        println!("| {} | weight gradient | {:.3} | {:.3} | {:.2}x |", cv.name, a * 1e3, b * 1e3, b / a);
        let copy = time(reps, || {
            for s in 0..cv.n {
                im2col(&cv, &x[s * cv.c * cv.h * cv.h..], black_box(&mut cols));
            }
        });
        eprintln!(
            "{}: {:.3} GFLOP per pass; the im2col copies alone {:.3} ms",
            cv.name,
            cv.flops() / 1e9,
            copy * 1e3
        );
    }
}
