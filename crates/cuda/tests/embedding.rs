//! kernels/embedding.cu against the CPU backend: every table dtype, scale 1
//! (a bit-exact copy) and != 1, repeated and boundary ids, and the id range
//! error. Exact: a gather and one or two f32 multiplies in the same order.

mod common;

use common::*;
use encdec_core::testing::random_normal;
use encdec_core::{Backend, DType, Tensor};

#[test]
fn embedding_matches_cpu_for_every_table_dtype() {
    let g = gpu_or_skip!("embedding_matches_cpu_for_every_table_dtype");
    let mut f = Failures::default();
    for &(vocab, dim) in &[(5usize, 1usize), (11, 7), (100, 130), (1000, 512)] {
        let table = host(random_normal(1, vocab * dim, 1.0), &[vocab, dim]);
        let ids: Vec<u32> = (0..37)
            .map(|i| ((i * 7919) % vocab) as u32)
            .chain([0, vocab as u32 - 1])
            .collect();
        let n = ids.len();
        let ih = Tensor::from_u32(ids.clone(), [1, n]).unwrap();
        let id = up(&g, &ih);
        for dt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
            let th = cpu().cast(&table, dt).unwrap();
            let td = up(&g, &th);
            for scale in [1.0f32, 22.627417] {
                let mut want = Tensor::zeros([1, n, dim], DType::F32);
                cpu().embedding(&ih, &th, scale, &mut want).unwrap();
                let mut got = poisoned(&g, &[1, n, dim]);
                g.embedding(&id, &td, scale, &mut got).unwrap();
                f.exact(
                    &format!("embedding {dt} vocab={vocab} dim={dim} scale={scale}"),
                    &down(&g, &got),
                    &want.to_f32_vec().unwrap(),
                );
            }
        }
    }
    f.finish("embedding");
}

#[test]
fn embedding_rejects_an_id_past_the_vocabulary() {
    let g = gpu_or_skip!("embedding_rejects_an_id_past_the_vocabulary");
    let table = up(&g, &host(vec![0.0; 12], &[4, 3]));
    let mut out = g.zeros(&[2, 3], DType::F32).unwrap();
    let ids = up(&g, &Tensor::from_u32(vec![1, 4], [2]).unwrap());
    let e = g
        .embedding(&ids, &table, 1.0, &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token id 4") && e.contains("vocabulary of 4"),
        "{e}"
    );
}
