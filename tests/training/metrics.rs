//! Metrics against hand-computed values.

use aotgrad::metrics::{Confusion, argmax_rows, correct_argmax, correct_binary};
use aotgrad::prelude::*;

#[test]
fn binary_and_multiclass_scores_match_hand_computation() {
    // truth:     1 1 1 0 0 0 0 1
    // predicted: 1 0 1 0 1 0 0 1   -> tp 3, fn 1, fp 1, tn 3
    let truth = [1, 1, 1, 0, 0, 0, 0, 1];
    let pred = [1, 0, 1, 0, 1, 0, 0, 1];
    let c = Confusion::new(2, &pred, &truth).unwrap();
    assert_eq!(c.counts, vec![vec![3, 1], vec![1, 3]]);
    assert_eq!(c.accuracy(), 0.75);
    let s = c.class(1);
    assert_eq!(
        (s.precision, s.recall, s.f1, s.support),
        (0.75, 0.75, 0.75, 4)
    );

    // 3 classes: truth 0 0 1 1 2 2, predicted 0 1 1 1 0 2
    let c = Confusion::new(3, &[0, 1, 1, 1, 0, 2], &[0, 0, 1, 1, 2, 2]).unwrap();
    let s0 = c.class(0); // tp 1, predicted 2, support 2
    assert_eq!((s0.precision, s0.recall), (0.5, 0.5));
    let s1 = c.class(1); // tp 2, predicted 3, support 2
    assert!((s1.precision - 2.0 / 3.0).abs() < 1e-12 && s1.recall == 1.0);
    assert!((s1.f1 - 0.8).abs() < 1e-12);
    let s2 = c.class(2); // tp 1, predicted 1, support 2
    assert_eq!((s2.precision, s2.recall), (1.0, 0.5));
    let m = c.macro_avg();
    assert!((m.precision - (0.5 + 2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
    assert!((m.f1 - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    let table = c.to_string();
    assert!(table.contains("macro"), "{table}");

    // A class never predicted: precision 0 by convention, no NaN.
    let c = Confusion::new(2, &[0, 0], &[0, 1]).unwrap();
    assert_eq!(c.class(1).precision, 0.0);
    assert_eq!(c.class(1).f1, 0.0);
    assert!(
        Confusion::new(2, &[0, 2], &[0, 1])
            .unwrap_err()
            .contains("sample 1")
    );
    assert!(Confusion::new(2, &[0], &[0, 1]).is_err());
}

#[test]
fn argmax_and_threshold_counts() {
    let out = Tensor::from_f32(&[0.1, 0.9, 0.0, 2.0, 2.0, 1.0], &[2, 3]).unwrap();
    assert_eq!(argmax_rows(&out), vec![1, 0], "first maximum wins");
    let labels = Tensor::from_i64(&[1, 1], &[2]).unwrap();
    assert_eq!(correct_argmax(&out, &labels), 1);
    let probs = Tensor::from_f32(&[0.2, 0.7, 0.5], &[3, 1]).unwrap();
    let y = Tensor::from_f32(&[0.0, 1.0, 0.0], &[3, 1]).unwrap();
    assert_eq!(correct_binary(&probs, &y, 0.5), 2);
}

/// The eval program of a classifier counts correct predictions itself; the count equals
/// the host-side argmax count on both backends (a trained and an untrained model).
#[test]
fn the_eval_program_counts_correct_predictions() {
    for backend in [
        aotgrad::prelude::Backend::Interpreter,
        aotgrad::prelude::Backend::Cpu { threads: 1 },
    ] {
        let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
        let mut step = trainer.compile(&backend).unwrap();
        for round in 0..2 {
            let r = step.evaluate(&batch).unwrap();
            let host = aotgrad::metrics::correct_argmax(r.output.as_ref().unwrap(), &batch.y);
            assert_eq!(r.correct, Some(host as u64), "round {round}");
            // And the confusion matrix the program builds is the host's.
            let pred = argmax_rows(r.output.as_ref().unwrap());
            let truth: Vec<usize> = batch.y.to_f64_vec().iter().map(|&v| v as usize).collect();
            let want = Confusion::new(10, &pred, &truth).unwrap();
            let got = Confusion::from_counts(r.confusion.as_ref().unwrap()).unwrap();
            assert_eq!(got, want, "round {round}");
            for _ in 0..20 {
                step.run(&batch).unwrap();
            }
        }
        // Not a classifier: no count.
        let (trainer, batch) = aotgrad::bench::setup("linreg").unwrap();
        let step = trainer.compile(&backend).unwrap();
        let r = step.evaluate(&batch).unwrap();
        assert_eq!((r.correct, r.confusion), (None, None));
    }
}
