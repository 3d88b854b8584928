//! Corpus BLEU and chrF on the full 3,003-segment newstest2014 en-de: the reference
//! scored against a deterministic perturbation of itself (word drops and swaps), so
//! that n-gram matching does real work. Compare with
//! `python3 tools/eval_reference_bleu.py --time` (sacreBLEU on the same input).
//! Skips when `../shared/data` is absent (a fresh clone).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use encdec_eval::bleu::{corpus_bleu, BleuConfig};
use encdec_eval::chrf::{corpus_chrf, ChrfConfig};
use encdec_eval::io::read_lines;

fn data_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wmt/newstest2014.en-de.de")
}

/// The perturbation shared with `tools/eval_reference_bleu.py --time`: every 7th
/// word dropped, each pair of words at positions 3 mod 5 / 4 mod 5 swapped, and
/// the words at 5 mod 11 reversed.
fn perturb(line: &str) -> String {
    let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
    let mut i = 3;
    while i + 1 < words.len() {
        words.swap(i, i + 1);
        i += 5;
    }
    words
        .iter()
        .enumerate()
        .filter(|(j, _)| j % 7 != 6)
        .map(|(j, w)| {
            if j % 11 == 5 {
                w.chars().rev().collect()
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn bench(c: &mut Criterion) {
    let path = data_file();
    let refs = match read_lines(&path) {
        Ok(r) => r,
        Err(_) => {
            eprintln!(
                "SKIP bleu bench: ../shared/data not found ({})",
                path.display()
            );
            return;
        }
    };
    let hyps: Vec<String> = refs.iter().map(|l| perturb(l)).collect();
    let refs = vec![refs];

    let bleu_cfg = BleuConfig::default();
    if let Ok(s) = corpus_bleu(&hyps, &refs, &bleu_cfg) {
        eprintln!("newstest2014 en-de perturbed: {}", s.format_text());
    }
    c.bench_function("corpus_bleu_13a_newstest2014_3003", |b| {
        b.iter(|| corpus_bleu(&hyps, &refs, &bleu_cfg))
    });
    let chrf = ChrfConfig::default();
    c.bench_function("corpus_chrf_newstest2014_3003", |b| {
        b.iter(|| corpus_chrf(&hyps, &refs, &chrf))
    });
    let chrfpp = ChrfConfig::plus_plus();
    if let (Ok(a), Ok(b)) = (
        corpus_chrf(&hyps, &refs, &chrf),
        corpus_chrf(&hyps, &refs, &chrfpp),
    ) {
        eprintln!("{}  {}", a.format_text(), b.format_text());
    }
    c.bench_function("corpus_chrfpp_newstest2014_3003", |b| {
        b.iter(|| corpus_chrf(&hyps, &refs, &chrfpp))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
