//! `encdec generate`: one source per input line, one output per line, same order.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use encdec_core::{Backend, DType};
use encdec_generate::{
    EarlyStopping, GenerationConfig, GenerationOverrides, Generator, Hypothesis, TraceEvent,
};
use encdec_models::tokenizer::Seq2SeqTokenizer;
use encdec_models::{load_model, LoadedModel, ModelConfig};

/// Where the model comes from and what it runs on (shared by generate, eval, bench).
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A local Hugging Face checkpoint directory, or a hub id (e.g.
    /// facebook/bart-large-cnn) found in the HF cache or downloaded.
    #[arg(long)]
    pub model: String,
    /// cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight dtype: f32, f16, bf16 or int8 (activations stay f32 on the CPU).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Generation settings; unset flags keep the checkpoint's generation_config.json.
#[derive(Args, Debug, Clone, Default)]
pub struct GenArgs {
    #[arg(long)]
    pub num_beams: Option<usize>,
    #[arg(long)]
    pub num_return_sequences: Option<usize>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long)]
    pub min_new_tokens: Option<usize>,
    /// Longest output counting the decoder start token (HF `max_length`).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Shortest output counting the decoder start token (HF `min_length`).
    #[arg(long)]
    pub min_length: Option<usize>,
    #[arg(long)]
    pub length_penalty: Option<f64>,
    #[arg(long)]
    pub no_repeat_ngram_size: Option<usize>,
    /// true, false or never (bare flag: true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub early_stopping: Option<String>,
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    #[arg(long)]
    pub do_sample: bool,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Apply config.json's task_specific_params[TASK] (e.g. summarization,
    /// translation_en_to_de) and its prefix, as transformers 4 pipelines did.
    #[arg(long)]
    pub task: Option<String>,
}

impl GenArgs {
    pub fn overrides(&self) -> Result<GenerationOverrides> {
        let early_stopping = self
            .early_stopping
            .as_deref()
            .map(str::parse::<EarlyStopping>)
            .transpose()
            .map_err(|e| anyhow!("--early-stopping: {e}"))?;
        Ok(GenerationOverrides {
            num_beams: self.num_beams,
            num_return_sequences: self.num_return_sequences,
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            max_length: self.max_length,
            min_length: self.min_length,
            length_penalty: self.length_penalty,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            early_stopping,
            repetition_penalty: self.repetition_penalty,
            do_sample: self.do_sample.then_some(true),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            task: self.task.clone(),
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    Text,
    Jsonl,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub gen: GenArgs,
    /// Source file, one input per line (default: stdin).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output file (default: stdout); written whole once generation succeeds.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Text put before every non-empty source (T5 task prefix, e.g. "summarize: ").
    #[arg(long)]
    pub prefix: Option<String>,
    /// Source language code (mBART-50, NLLB, M2M100), e.g. en_XX, eng_Latn.
    #[arg(long)]
    pub src_lang: Option<String>,
    /// Target language code; forces it as the first generated token.
    #[arg(long)]
    pub tgt_lang: Option<String>,
    /// Print each decoding step (chosen token, top-5 alternatives) on stderr.
    #[arg(long)]
    pub trace: bool,
    /// Print the resolved generation settings and where each came from, then exit.
    #[arg(long)]
    pub show_config: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutFormat,
    /// Draw the cross-attention of the first input's output (source tokens x
    /// generated tokens, mean over heads) to FILE.svg or FILE.png.
    #[arg(long, value_name = "FILE")]
    pub attention_map: Option<PathBuf>,
    /// Decoder layer of --attention-map (0-based; default: the last).
    #[arg(long, value_name = "N", requires = "attention_map")]
    pub attention_layer: Option<usize>,
}

/// A CPU or CUDA backend for `--device`.
pub fn make_backend(device: &str, threads: Option<usize>) -> Result<Arc<dyn Backend>> {
    match device {
        "cpu" => Ok(match threads {
            Some(n) => Arc::new(
                encdec_cpu::CpuBackend::try_with_threads(n)
                    .map_err(|e| anyhow!("--threads {n}: {e}"))?,
            ),
            None => Arc::new(encdec_cpu::CpuBackend::new()),
        }),
        d if d == "cuda" || d.starts_with("cuda:") => {
            let ordinal = match d.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| anyhow!("--device {d}: expected cuda or cuda:N"))?,
                None => 0,
            };
            // ENCDEC_CUDA_EMU=<lib>: the kernels on their CPU emulator (a developer
            // check without a GPU; scripts/build-cuda-emu.sh).
            let backend = match std::env::var_os("ENCDEC_CUDA_EMU") {
                Some(lib) => encdec_cuda::CudaBackend::emulated(&lib.to_string_lossy()),
                None => encdec_cuda::CudaBackend::new(ordinal),
            }
            .map_err(|e| anyhow!("--device {d}: {e}"))?;
            // Compile (or load from the disk cache) every kernel now, so that a
            // missing NVRTC or a compile error is reported before any work.
            backend
                .preload()
                .map_err(|e| anyhow!("--device {d}: {e}"))?;
            Ok(Arc::new(backend))
        }
        d => bail!("--device {d}: expected cpu, cuda or cuda:N"),
    }
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "int8" | "i8" => Ok(DType::I8),
        _ => bail!("--dtype {s}: expected f32, f16, bf16 or int8"),
    }
}

/// A checkpoint opened for generation: model, tokenizer and resolved settings.
pub struct Session {
    pub loaded: LoadedModel,
    pub tokenizer: Seq2SeqTokenizer,
    pub config: GenerationConfig,
    pub prefix: Option<String>,
}

/// Tokenizer and generation settings of `dir`, without loading weights.
pub fn resolve_settings(
    dir: &Path,
    gen: &GenArgs,
    prefix: Option<&str>,
    src_lang: Option<&str>,
    tgt_lang: Option<&str>,
) -> Result<(
    ModelConfig,
    Seq2SeqTokenizer,
    GenerationConfig,
    Option<String>,
)> {
    let model_cfg = ModelConfig::from_dir(dir)?;
    let mut tokenizer = Seq2SeqTokenizer::from_dir(dir, model_cfg.model_type())?;
    if let Some(lang) = src_lang {
        tokenizer
            .set_src_lang(lang)
            .with_context(|| format!("--src-lang {lang}"))?;
    }
    let mut over = gen.overrides()?;
    if let Some(lang) = tgt_lang {
        let id = tokenizer
            .lang_id(lang)
            .with_context(|| format!("--tgt-lang {lang}"))?;
        over.forced_bos_token_id = Some(id);
    }
    let config = GenerationConfig::from_checkpoint(dir, &over)?;
    let prefix = prefix
        .map(str::to_string)
        .or_else(|| config.task_prefix.clone());
    Ok((model_cfg, tokenizer, config, prefix))
}

impl Session {
    pub fn open(
        model: &ModelArgs,
        gen: &GenArgs,
        prefix: Option<&str>,
        src_lang: Option<&str>,
        tgt_lang: Option<&str>,
    ) -> Result<Self> {
        let dir = crate::hub::resolve_model(&model.model)?;
        let dtype = parse_dtype(&model.dtype)?;
        let (model_cfg, tokenizer, config, prefix) =
            resolve_settings(&dir, gen, prefix, src_lang, tgt_lang)?;
        let backend = make_backend(&model.device, model.threads)?;
        if let (_, Some(note)) =
            encdec_models::weight_dtype_for(&model_cfg, backend.device(), dtype)
        {
            eprintln!("note: {note}");
        }
        let loaded = load_model(&dir, backend, dtype)?;
        let spec_vocab = loaded.model.spec().vocab_size;
        if tokenizer.vocab_size() > spec_vocab {
            bail!(
                "{}: the tokenizer has {} tokens but the model's vocabulary has {spec_vocab} rows \
                 (tokenizer and checkpoint do not belong together)",
                dir.display(),
                tokenizer.vocab_size()
            );
        }
        Ok(Session {
            loaded,
            tokenizer,
            config,
            prefix,
        })
    }

    /// Token ids of each line (empty lines: None), truncated to what the encoder
    /// accepts with a warning per cut line.
    pub fn encode_lines(&self, lines: &[String]) -> Result<Vec<Option<Vec<u32>>>> {
        let max = self.loaded.model.spec().max_source_positions;
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                out.push(None);
                continue;
            }
            let text = match &self.prefix {
                Some(p) => format!("{p}{line}"),
                None => line.clone(),
            };
            let ids = match max {
                Some(max) => {
                    let (ids, cut) = self
                        .tokenizer
                        .encode_truncated(&text, max)
                        .with_context(|| format!("input line {}", i + 1))?;
                    if cut {
                        eprintln!(
                            "warning: input line {}: longer than the model's {max} source positions; truncated",
                            i + 1
                        );
                    }
                    ids
                }
                None => self
                    .tokenizer
                    .encode(&text)
                    .with_context(|| format!("input line {}", i + 1))?,
            };
            out.push(Some(ids));
        }
        Ok(out)
    }

    /// Generate for every line: `num_return_sequences` hypotheses each (none for
    /// an empty line).
    pub fn generate(
        &self,
        encoded: &[Option<Vec<u32>>],
        batch_size: usize,
        trace: bool,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let mut generator = Generator::new(self.loaded.model.as_ref(), self.config.clone())?;
        let (index, sources): (Vec<usize>, Vec<Vec<u32>>) = encoded
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.clone().map(|ids| (i, ids)))
            .unzip();
        let tok = &self.tokenizer;
        let mut print = |ev: &TraceEvent<'_>| {
            let name = |id: u32| tok.id_to_token(id).unwrap_or_else(|| format!("<{id}>"));
            let alts: Vec<String> = ev
                .alternatives
                .iter()
                .map(|&(id, p)| format!("{:?} {p:.4}", name(id)))
                .collect();
            eprintln!(
                "[line {} row {} step {}] {:?} (id {}, p {:.4}) | {}",
                index[ev.source] + 1,
                ev.row,
                ev.step,
                name(ev.token),
                ev.token,
                ev.prob,
                alts.join(", ")
            );
        };
        let hyps = generator.generate_all(
            &sources,
            batch_size.max(1),
            if trace { Some(&mut print) } else { None },
        )?;
        let mut out = vec![Vec::new(); encoded.len()];
        for (i, h) in index.into_iter().zip(hyps) {
            out[i] = h;
        }
        Ok(out)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids, true)?)
    }
}

/// Reads one source per line; invalid UTF-8 is an error naming the line.
pub fn read_source_lines(input: Option<&Path>) -> Result<Vec<String>> {
    let mut bytes = Vec::new();
    let name = match input {
        Some(p) => {
            bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            p.display().to_string()
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read stdin")?;
            "stdin".to_string()
        }
    };
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8(line.to_vec()).map_err(|e| {
                anyhow!(
                    "{name}: line {}: invalid UTF-8 at byte {}",
                    i + 1,
                    e.utf8_error().valid_up_to()
                )
            })
        })
        .collect()
}

/// Writes `text` to `path` through a temporary file, so a failed run never
/// leaves a half-written output in place of a good one.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("out")
    ));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.show_config {
        let dir = crate::hub::resolve_model(&args.model.model)?;
        let (_, _, config, prefix) = resolve_settings(
            &dir,
            &args.gen,
            args.prefix.as_deref(),
            args.src_lang.as_deref(),
            args.tgt_lang.as_deref(),
        )?;
        print!("{config}");
        if let Some(p) = prefix {
            println!("  prefix = {p:?}");
        }
        for w in config.warnings() {
            eprintln!("warning: {w}");
        }
        return Ok(());
    }
    if let Some(p) = &args.attention_map {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("svg" | "png")) {
            bail!(
                "--attention-map {}: the file name must end in .svg or .png",
                p.display()
            );
        }
    }
    let lines = read_source_lines(args.input.as_deref())?;
    let session = Session::open(
        &args.model,
        &args.gen,
        args.prefix.as_deref(),
        args.src_lang.as_deref(),
        args.tgt_lang.as_deref(),
    )?;
    for w in session.config.warnings() {
        eprintln!("warning: {w}");
    }
    let encoded = session.encode_lines(&lines)?;
    let hyps = session.generate(&encoded, args.batch_size, args.trace)?;
    let mut text = String::new();
    let n_ret = session.config.num_return_sequences.max(1);
    for (i, hs) in hyps.iter().enumerate() {
        match args.format {
            OutFormat::Text => {
                if hs.is_empty() {
                    for _ in 0..n_ret {
                        text.push('\n');
                    }
                }
                for h in hs {
                    text.push_str(&session.decode(&h.ids)?.replace('\n', " "));
                    text.push('\n');
                }
            }
            OutFormat::Jsonl => {
                let entry = |h: &Hypothesis| -> Result<serde_json::Value> {
                    Ok(serde_json::json!({
                        "text": session.decode(&h.ids)?,
                        "ids": h.ids,
                        "score": h.score,
                    }))
                };
                let mut obj = match hs.first() {
                    Some(h) => entry(h)?,
                    None => serde_json::json!({"text": "", "ids": [], "score": null}),
                };
                obj["index"] = serde_json::json!(i);
                if hs.len() > 1 {
                    obj["alternatives"] = serde_json::Value::Array(
                        hs[1..].iter().map(entry).collect::<Result<Vec<_>>>()?,
                    );
                }
                text.push_str(&obj.to_string());
                text.push('\n');
            }
        }
    }
    match &args.output {
        Some(p) => write_atomically(p, &text)?,
        None => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::new(stdout.lock());
            w.write_all(text.as_bytes())?;
            w.flush()?;
        }
    }
    if let Some(path) = &args.attention_map {
        draw_attention_map(&session, &args, &encoded, &hyps, path)?;
    }
    Ok(())
}

/// The attention map of the first input that has an output (its best hypothesis).
fn draw_attention_map(
    session: &Session,
    args: &GenerateArgs,
    encoded: &[Option<Vec<u32>>],
    hyps: &[Vec<Hypothesis>],
    path: &Path,
) -> Result<()> {
    let Some((line, source, best)) = encoded
        .iter()
        .zip(hyps)
        .enumerate()
        .find_map(|(i, (e, h))| Some((i + 1, e.as_ref()?, h.first()?)))
    else {
        bail!("--attention-map: every input line is empty; nothing to draw");
    };
    let mut map = super::attention_map::AttentionMap::compute(
        session,
        source,
        &best.ids,
        args.attention_layer,
    )?;
    map.title = format!(
        "{}, input line {line}: cross-attention of decoder layer {} (mean of {} heads)",
        args.model.model, map.layer, map.heads
    );
    map.save(path)
}
