//! `encdec info`: what a model is and what its weights cost.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use encdec_models::{catalogue, ModelInfo};

use super::Format;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A local Hugging Face checkpoint directory (config.json + safetensors); its
    /// safetensors headers are validated against the config.
    #[arg(long, conflicts_with = "arch")]
    model: Option<PathBuf>,
    /// A catalogue shape (e.g. t5-small, bart-large-cnn); `--list` shows them all.
    #[arg(long)]
    arch: Option<String>,
    /// List the catalogue names.
    #[arg(long)]
    list: bool,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

pub fn run(args: InfoArgs) -> Result<()> {
    if args.list {
        for name in catalogue::names() {
            println!("{name}");
        }
        return Ok(());
    }
    let (source, info, report) = match (&args.model, &args.arch) {
        (Some(dir), _) => {
            let (info, report) = encdec_models::inspect_dir(dir)?;
            (dir.display().to_string(), info, Some(report))
        }
        (None, Some(name)) => {
            let cfg = catalogue::get(name)?;
            (format!("catalogue:{name}"), cfg.info(), None)
        }
        (None, None) => bail!("give --model DIR or --arch NAME (see --list)"),
    };
    match args.format {
        Format::Json => {
            let mut v = serde_json::json!({
                "source": source,
                "architecture": info.architecture,
                "model_type": info.model_type,
                "encoder_layers": info.encoder_layers,
                "decoder_layers": info.decoder_layers,
                "d_model": info.d_model,
                "heads": info.heads,
                "decoder_heads": info.decoder_heads,
                "d_kv": info.d_kv,
                "ffn_dim": info.ffn_dim,
                "vocab_size": info.vocab_size,
                "parameters": info.params,
                "bytes": {"f32": info.bytes_f32, "f16": info.bytes_f16, "int8": info.bytes_int8},
            });
            if let Some(r) = &report {
                v["checkpoint"] = serde_json::json!({
                    "files": r.files,
                    "tensors": r.tensors,
                    "stored_bytes": r.stored_bytes,
                    "stored_dtypes": r.stored_dtypes,
                    "warnings": r.warnings,
                });
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Text => print_text(&source, &info, report.as_ref()),
    }
    Ok(())
}

fn print_text(source: &str, info: &ModelInfo, report: Option<&encdec_models::ValidationReport>) {
    println!("model          {source}");
    println!(
        "architecture   {} (model_type {})",
        info.architecture, info.model_type
    );
    println!(
        "layers         {} encoder, {} decoder",
        info.encoder_layers, info.decoder_layers
    );
    println!(
        "d_model        {}   heads {} x {} (decoder {})   ffn {}",
        info.d_model, info.heads, info.d_kv, info.decoder_heads, info.ffn_dim
    );
    println!("vocab          {}", info.vocab_size);
    println!("parameters     {}", group_thousands(info.params));
    println!(
        "weights        {} fp32, {} fp16, {} int8",
        human_bytes(info.bytes_f32),
        human_bytes(info.bytes_f16),
        human_bytes(info.bytes_int8)
    );
    if let Some(r) = report {
        let dtypes: Vec<String> = r
            .stored_dtypes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!(
            "checkpoint     {} tensors in {} file(s), {} stored ({}); valid",
            r.tensors,
            r.files.len(),
            human_bytes(r.stored_bytes),
            dtypes.join(", ")
        );
        for w in &r.warnings {
            println!("warning        {w}");
        }
    }
}

fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
