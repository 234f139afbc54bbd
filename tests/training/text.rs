//! The character corpus of the sequence models (`data::text`): the bundled tragedies,
//! the vocabulary and split, seeded windows with next-character targets, and errors.

use aotgrad::data::text::{CharCorpus, Part, TextError};

#[test]
fn the_bundled_corpus_is_the_seven_tragedies() {
    let c = CharCorpus::bundled().unwrap();
    let (train, val) = (c.part(Part::Train), c.part(Part::Validation));
    // data/README.md: 993,263 ASCII characters, 73 distinct; the last 10% held out.
    assert_eq!(train.len() + val.len(), 993_263);
    assert_eq!(val.len(), 99_326);
    assert_eq!(c.vocab_size(), 73);
    assert!(c.vocab.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
    let head: Vec<i64> = train[..25].iter().map(|&i| i64::from(i)).collect();
    assert_eq!(c.decode(&head).unwrap(), "HAMLET, PRINCE OF DENMARK");
    let ids = c.encode("To be, or not to be").unwrap();
    let back: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(c.decode(&back).unwrap(), "To be, or not to be");
}

#[test]
fn windows_are_seeded_and_their_targets_are_the_next_characters() {
    let c = CharCorpus::from_text(&"abcdefghij".repeat(50), 0.2).unwrap();
    assert_eq!(c.part(Part::Validation).len(), 100);
    let b = c.windows(Part::Train, 4, 8, 7, 0).unwrap();
    assert_eq!(b.x.shape(), &[4, 8]);
    assert_eq!(b.y.shape(), &[4, 8]);
    let (x, y) = (b.x.as_i64().unwrap(), b.y.as_i64().unwrap());
    for r in 0..4 {
        let (xr, yr) = (&x[r * 8..][..8], &y[r * 8..][..8]);
        assert_eq!(&xr[1..], &yr[..7], "y is x shifted by one");
        // In "abcd...j" repeated, the next character is the next id modulo 10.
        assert_eq!(yr[7], (xr[7] + 1) % 10);
    }
    assert_eq!(
        b,
        c.windows(Part::Train, 4, 8, 7, 0).unwrap(),
        "same seed and index"
    );
    assert_ne!(
        b,
        c.windows(Part::Train, 4, 8, 7, 1).unwrap(),
        "another batch"
    );
    assert_ne!(
        b,
        c.windows(Part::Train, 4, 8, 8, 0).unwrap(),
        "another seed"
    );
    // The validation windows come from the tail only.
    let v = c.windows(Part::Validation, 3, 99, 1, 0).unwrap();
    assert_eq!(v.x.shape(), &[3, 99]);
}

#[test]
fn bad_requests_are_typed_errors() {
    let c = CharCorpus::from_text("hello world", 0.5).unwrap();
    assert!(matches!(
        c.encode("hello!"),
        Err(TextError::Unknown { ch: '!', vocab: 8 })
    ));
    assert!(matches!(
        c.decode(&[0, 8]),
        Err(TextError::BadToken { id: 8, vocab: 8 })
    ));
    assert!(matches!(c.decode(&[-1]), Err(TextError::BadToken { .. })));
    let e = c.windows(Part::Validation, 2, 16, 0, 0).unwrap_err();
    assert!(e.to_string().contains("too short"), "{e}");
    assert!(matches!(
        c.windows(Part::Train, 0, 2, 0, 0),
        Err(TextError::EmptyWindow { .. })
    ));
    let missing = aotgrad::data::text::read_text(std::path::Path::new("/nonexistent/t.txt.gz"));
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/t.txt.gz")
    );
}

#[test]
fn a_corpus_that_is_not_text_is_named() {
    let path = std::env::temp_dir().join(format!("aotgrad-not-utf8-{}.txt", std::process::id()));
    std::fs::write(&path, [0x66, 0xff, 0xfe]).unwrap();
    let e = aotgrad::data::text::read_text(&path).unwrap_err();
    assert!(
        matches!(e, TextError::NotUtf8 { .. }) && e.to_string().contains("not UTF-8 text"),
        "{e}"
    );
    let _ = std::fs::remove_file(&path);
}
