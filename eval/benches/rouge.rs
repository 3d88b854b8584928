//! ROUGE (rouge1/2/L/Lsum, stemming on) on the full CNN/DM test split: the 11,490
//! SimCLS outputs against their references, as `encdec score rouge` computes it, with
//! and without Punkt sentence splitting before rougeLsum. Compare with
//! `python3 tools/eval_reference_rouge.py --time` (rouge-score on the same files).
//! Skips when `../shared/data` is absent (a fresh clone).

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use encdec_eval::rouge::{score_corpus, RougeConfig};

fn outputs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cnndm/outputs")
}

fn read_lines(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Some(text.split('\n').map(str::to_string).collect())
}

fn bench_rouge(c: &mut Criterion) {
    let dir = outputs_dir();
    let (Some(hyps), Some(refs)) = (
        read_lines(&dir.join("simcls.cnndm.test.hypo.lower.tok")),
        read_lines(&dir.join("simcls.cnndm.test.ref.lower.tok")),
    ) else {
        eprintln!("SKIP rouge bench: ../shared/data not found");
        return;
    };
    let mut group = c.benchmark_group("rouge_cnndm_11490");
    group.sample_size(10);
    let config = RougeConfig::default();
    group.bench_function("rouge1_2_L_Lsum_stem", |b| {
        b.iter(|| score_corpus(&config, &hyps, &refs).expect("scores"))
    });
    let split = RougeConfig {
        split_sentences: true,
        ..RougeConfig::default()
    };
    group.bench_function("rouge1_2_L_Lsum_stem_split_sentences", |b| {
        b.iter(|| score_corpus(&split, &hyps, &refs).expect("scores"))
    });
    group.finish();
}

criterion_group!(benches, bench_rouge);
criterion_main!(benches);
