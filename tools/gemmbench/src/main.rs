use std::time::Instant;
fn main() {
    for &(m, k, n) in &[(64usize, 784usize, 256usize), (512, 784, 256), (784, 512, 256), (256, 784, 1024), (1024, 256, 1024), (512, 256, 64)] {
        let a = vec![1.0f32; m * k];
        let b = vec![0.5f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let reps = (2e9 / flops).max(5.0) as usize;
        // matrixmultiply
        let t = Instant::now();
        for _ in 0..reps {
            unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), k as isize, 1, b.as_ptr(), n as isize, 1, 0.0, c.as_mut_ptr(), n as isize, 1) };
        }
        let mm = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        for _ in 0..reps {
            unsafe { gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None) };
        }
        let gm = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
        // transposed A (A^T stored as k x m)
        let t = Instant::now();
        for _ in 0..reps {
            unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), 1, m as isize, b.as_ptr(), n as isize, 1, 0.0, c.as_mut_ptr(), n as isize, 1) };
        }
        let mmt = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        for _ in 0..reps {
            unsafe { gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), m as isize, 1, b.as_ptr(), 1, n as isize, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None) };
        }
        let gmt = flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("{m}x{k}x{n}: matrixmultiply {mm:.1} (A^T {mmt:.1}) gemm {gm:.1} (A^T {gmt:.1}) GFLOP/s");
    }
}
