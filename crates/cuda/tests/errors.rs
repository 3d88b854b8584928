//! Bad arguments are errors, never panics, of the same kind as the CPU
//! backend's (same `Error` variant, message naming the op), for every op; and
//! tensors of the wrong device or dtype are refused naming op, dtype and device.

mod common;

use common::*;
use encdec_core::{Activation, AttentionParams, Backend, DType, Error, NormKind, Result, Tensor};

type Case = (
    &'static str,
    fn(&dyn Backend, &dyn Fn(Tensor) -> Tensor) -> Result<()>,
);

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_f32(v, shape).unwrap()
}
fn ids(v: Vec<u32>) -> Tensor {
    let n = v.len();
    Tensor::from_u32(v, [n]).unwrap()
}

/// Each case builds its tensors through `u` (upload to the backend under test).
const CASES: &[Case] = &[
    ("linear k mismatch", |b, u| {
        let mut o = b.zeros(&[2, 2], DType::F32)?;
        b.linear(
            &u(t(vec![0.0; 6], &[2, 3])),
            &u(t(vec![0.0; 8], &[2, 4])),
            None,
            &mut o,
        )
    }),
    ("linear bad out", |b, u| {
        let mut o = b.zeros(&[2, 5], DType::F32)?;
        b.linear(
            &u(t(vec![0.0; 6], &[2, 3])),
            &u(t(vec![0.0; 6], &[2, 3])),
            None,
            &mut o,
        )
    }),
    ("linear u32 x", |b, u| {
        let mut o = b.zeros(&[2, 2], DType::F32)?;
        b.linear(
            &u(ids(vec![1, 2])),
            &u(t(vec![0.0; 6], &[2, 3])),
            None,
            &mut o,
        )
    }),
    ("linear bias length", |b, u| {
        let mut o = b.zeros(&[2, 2], DType::F32)?;
        let bias = u(t(vec![0.0; 3], &[3]));
        b.linear(
            &u(t(vec![0.0; 6], &[2, 3])),
            &u(t(vec![0.0; 6], &[2, 3])),
            Some(&bias),
            &mut o,
        )
    }),
    ("norm weight length", |b, u| {
        let mut o = b.zeros(&[2, 3], DType::F32)?;
        b.norm(
            NormKind::LayerNorm,
            &u(t(vec![0.0; 6], &[2, 3])),
            &u(t(vec![1.0; 4], &[4])),
            None,
            1e-5,
            &mut o,
        )
    }),
    ("rms norm with bias", |b, u| {
        let mut o = b.zeros(&[2, 3], DType::F32)?;
        let w = u(t(vec![1.0; 3], &[3]));
        b.norm(
            NormKind::RmsNorm,
            &u(t(vec![0.0; 6], &[2, 3])),
            &w,
            Some(&w),
            1e-6,
            &mut o,
        )
    }),
    ("norm of f16", |b, u| {
        let mut o = b.zeros(&[2, 3], DType::F32)?;
        let x = b.cast(&u(t(vec![0.0; 6], &[2, 3])), DType::F16)?;
        b.norm(
            NormKind::RmsNorm,
            &x,
            &u(t(vec![1.0; 3], &[3])),
            None,
            1e-6,
            &mut o,
        )
    }),
    ("add_norm residual shape", |b, u| {
        let mut o = b.zeros(&[2, 3], DType::F32)?;
        let mut r = b.zeros(&[3, 3], DType::F32)?;
        b.add_norm(
            NormKind::RmsNorm,
            &u(t(vec![0.0; 6], &[2, 3])),
            &mut r,
            &u(t(vec![1.0; 3], &[3])),
            None,
            1e-6,
            &mut o,
        )
    }),
    ("shared output", |b, _| {
        let mut x = b.zeros(&[2, 3], DType::F32)?;
        let _view = x.clone();
        b.scale(&mut x, 2.0)
    }),
    ("add_assign broadcast", |b, u| {
        let mut x = u(t(vec![1.0; 6], &[2, 3]));
        b.add_assign(&mut x, &u(t(vec![1.0; 2], &[2])))
    }),
    ("mul_assign broadcast", |b, u| {
        let mut x = u(t(vec![1.0; 6], &[2, 3]));
        b.mul_assign(&mut x, &u(t(vec![2.0; 6], &[3, 2])))
    }),
    ("gated_activation shapes", |b, u| {
        let mut o = b.zeros(&[2, 3], DType::F32)?;
        b.gated_activation(
            &u(t(vec![0.0; 6], &[2, 3])),
            &u(t(vec![0.0; 4], &[2, 2])),
            Activation::Gelu,
            &mut o,
        )
    }),
    ("activation of u32", |b, u| {
        b.activation(&mut u(ids(vec![1, 2])), Activation::Relu)
    }),
    ("embedding id out of range", |b, u| {
        let mut o = b.zeros(&[2, 3], DType::F32)?;
        b.embedding(
            &u(ids(vec![1, 4])),
            &u(t(vec![0.0; 12], &[4, 3])),
            1.0,
            &mut o,
        )
    }),
    ("embedding f32 ids", |b, u| {
        let mut o = b.zeros(&[2, 3], DType::F32)?;
        b.embedding(
            &u(t(vec![1.0, 2.0], &[2])),
            &u(t(vec![0.0; 12], &[4, 3])),
            1.0,
            &mut o,
        )
    }),
    ("write_rows past the cache", |b, u| {
        let mut c = b.zeros(&[2, 5, 4], DType::F32)?;
        b.write_rows(&u(t(vec![0.0; 24], &[2, 3, 4])), &mut c, 3)
    }),
    // f32 into a half cache rounds; a half source into an f32 cache is refused
    ("write_rows dtype", |b, u| {
        let mut c = b.zeros(&[2, 5, 4], DType::F32)?;
        let src = b.cast(&u(t(vec![0.0; 24], &[2, 3, 4])), DType::F16)?;
        b.write_rows(&src, &mut c, 0)
    }),
    ("index_select out of range", |b, u| {
        let src = b.zeros(&[2, 5, 4], DType::F32)?;
        let mut d = b.zeros(&[2, 5, 4], DType::F32)?;
        b.index_select(&src, &u(ids(vec![0, 2])), &mut d)
    }),
    ("index_select shape", |b, u| {
        let src = b.zeros(&[2, 5, 4], DType::F32)?;
        let mut d = b.zeros(&[3, 5, 4], DType::F32)?;
        b.index_select(&src, &u(ids(vec![0, 1])), &mut d)
    }),
    ("topk k past the row", |b, u| {
        b.topk(&u(t(vec![0.0; 6], &[2, 3])), 4).map(|_| ())
    }),
    ("softmax of u32", |b, u| {
        b.softmax(&mut u(ids(vec![1, 2, 3])))
    }),
    ("cast ids to float", |b, u| {
        b.cast(&u(ids(vec![1])), DType::F32).map(|_| ())
    }),
    ("batched_matmul shapes", |b, u| {
        let mut o = b.zeros(&[2, 3, 5], DType::F32)?;
        b.batched_matmul(
            &u(t(vec![0.0; 24], &[2, 3, 4])),
            &u(t(vec![0.0; 30], &[2, 3, 5])),
            &mut o,
        )
    }),
    ("attention kv_len", |b, u| {
        let q = u(t(vec![0.0; 16], &[2, 1, 8]));
        let k = u(t(vec![0.0; 48], &[2, 3, 8]));
        let mut o = b.zeros(&[2, 1, 8], DType::F32)?;
        let p = AttentionParams {
            num_heads: 2,
            head_dim: 4,
            scale: 1.0,
            causal: false,
            q_offset: 0,
            kv_len: 4,
            key_mask: None,
            position_bias: None,
            relative_bias: None,
            kv_index: None,
            operand_dtype: DType::F32,
        };
        b.attention(&q, &k, &k, &p, &mut o)
    }),
];

fn variant(e: &Error) -> std::mem::Discriminant<Error> {
    std::mem::discriminant(e)
}

#[test]
fn bad_arguments_give_the_cpu_backends_errors() {
    let g = gpu_or_skip!("bad_arguments_give_the_cpu_backends_errors");
    let mut fails = Vec::new();
    let cpu_up = |x: Tensor| x;
    let dev_up = |x: Tensor| g.upload(&x).unwrap();
    for (name, case) in CASES {
        let want = case(cpu(), &cpu_up);
        let got = case(&*g, &dev_up);
        match (want, got) {
            (Err(w), Err(e)) => {
                if variant(&w) != variant(&e) {
                    fails.push(format!("{name}: cpu says `{w}`, the device says `{e}`"));
                }
            }
            (Err(w), Ok(())) => {
                fails.push(format!("{name}: cpu says `{w}`, the device accepted it"))
            }
            (Ok(()), _) => fails.push(format!("{name}: the case is not an error on the cpu")),
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

#[test]
fn host_tensors_and_unsupported_dtypes_name_op_dtype_and_device() {
    let g = gpu_or_skip!("host_tensors_and_unsupported_dtypes_name_op_dtype_and_device");
    if g.cuda.is_none() {
        return; // the CPU stand-in takes host tensors
    }
    let dev = g.device().to_string();
    let x = t(vec![0.0; 6], &[2, 3]);
    let w = g.upload(&t(vec![0.0; 6], &[2, 3])).unwrap();
    let mut o = g.zeros(&[2, 2], DType::F32).unwrap();
    let e = g.linear(&x, &w, None, &mut o).unwrap_err();
    assert!(matches!(e, Error::WrongDevice { op: "linear", .. }), "{e}");
    let s = e.to_string();
    assert!(s.contains("cpu") && s.contains(&dev), "{s}");
    let mut xh = g.cast(&g.upload(&x).unwrap(), DType::BF16).unwrap();
    let e = g.softmax(&mut xh).unwrap_err().to_string();
    assert!(
        e.contains("softmax") && e.contains("bf16") && e.contains(&dev),
        "{e}"
    );
    assert!(g.describe().starts_with(&dev), "{}", g.describe());
}
