#!/usr/bin/env python3
"""Run the `encdec bench` workloads on peer engines and write the same JSON schema.

Engines (`--device cpu`, the default; float32 unless said):
  transformers   Hugging Face transformers (PyTorch), `model.generate`
  ct2-float32    CTranslate2, compute_type float32
  ct2-int8       CTranslate2, compute_type int8 (weights quantised at load)
On a GPU (`--device cuda`), by default:
  transformers-float16   transformers in float16 (eager PyTorch, SDPA attention)
  ct2-float16            CTranslate2, compute_type float16
  ct2-int8_float16       CTranslate2, int8 weights with float16 activations
  (also: transformers (float32), transformers-bfloat16, ct2-float32, ct2-int8)
and encdec itself in the same rotation: encdec-f32, encdec-int8 (CPU) or
encdec-f16, encdec-bf16, encdec-int8 (GPU; `encdec bench --device cuda`).
GPU timings synchronise the device before the clock stops; peak device memory
(torch.cuda.max_memory_allocated) is reported as "peak_device_mb".

The model is built from the same config.json the encdec catalogue embeds
(crates/models/src/catalogue/NAME.json, or --config FILE) with random weights
(torch.manual_seed), saved once, and converted for CTranslate2 with
`ctranslate2.converters.TransformersConverter` (a stand-in tokenizer supplies
the vocabulary names: the model has none). Every engine runs fixed-length
generation: min new tokens = max new tokens, so EOS never stops a sequence.
Source ids are the same deterministic ids `encdec bench` uses (see source_ids).

Each engine lives in its own worker process (its own peak RSS, its own thread
settings); the parent alternates engines and workloads round by round and keeps
the median of the rounds, because timings on a small shared machine are noisy
(CTranslate2 slows 7-11x when anything else runs on the same cores).

Output: a JSON list, one object per engine, in `encdec bench --format json`'s
schema (docs/bench.md) plus "engine" and "versions":

  [{"engine": "transformers", "dtype": "float32", "model": "...", "device": "cpu",
    "threads": 2, "machine": {...}, "versions": {...},
    "results": [{"workload": "W1", "batch": 1, "src_len": 32, "new_tokens": 64,
                 "num_beams": 1, "tokens_per_s": ..., "median_s": ..., "runs": [...],
                 "encoder_s": ..., "ttft_s": ..., "step_p50_ms": ..., ...}]}, ...]

Use it with `encdec bench --compare-peers FILE` (ratios) and `--plot FILE.svg`.

Example (the quick sanity check of docs/bench.md):

  python tools/bench_peers.py --arch opus-mt-en-de --workload W1 --rounds 3 \\
      --threads 2 --out /tmp/peers.json

Needs: torch, transformers, ctranslate2 (pip install ctranslate2). Offline.
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "crates" / "models" / "src" / "catalogue"

# DESIGN.md's workloads: batch, source tokens, beams, new tokens.
WORKLOADS = {
    "W1": dict(batch=1, src_len=32, num_beams=1, new_tokens=64),
    "W2": dict(batch=16, src_len=64, num_beams=1, new_tokens=64),
    "W3": dict(batch=4, src_len=128, num_beams=4, new_tokens=64),
    "W4": dict(batch=1, src_len=512, num_beams=1, new_tokens=64),
}

ENGINES = ("transformers", "ct2-float32", "ct2-int8")
GPU_ENGINES = ("transformers-float16", "ct2-float16", "ct2-int8_float16")
# encdec itself, in the same rotation (the release binary, on the same saved model)
ENCDEC_ENGINES = ("encdec-f32", "encdec-int8", "encdec-f16", "encdec-bf16")
KNOWN_ENGINES = ENGINES + GPU_ENGINES + ("transformers-bfloat16",) + ENCDEC_ENGINES


def engine_dtype(engine):
    """The dtype an engine name runs in (`transformers` alone: float32)."""
    if engine.startswith("encdec-"):
        return {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}.get(
            engine[len("encdec-"):], engine[len("encdec-"):])
    if "-" in engine:
        return engine.split("-", 1)[1]
    return "float32"


def source_ids(batch, src_len, vocab):
    """The deterministic source ids of `encdec bench` (src/cli/bench.rs, `source_ids`).

    Ids lie in [10, span + 10) with span = min(vocab, 32000) - 20, which avoids every
    special id of the catalogue (0..3 and the last ids of the vocabulary).
    """
    span = min(vocab, 32000) - 20
    return [
        [10 + (b * 131 + t * 7919 + (b * t) % 17) % span for t in range(src_len)]
        for b in range(batch)
    ]


def step_percentiles(steps, pcts):
    """p50/p90/p99 of the step times, or (engines that report only percentiles,
    one triple per run) the median of each."""
    pcts = [p for p in pcts if p and all(x is not None for x in p)]
    if not steps and pcts:
        return {f"step_p{q}_ms": statistics.median(p[i] for p in pcts) for i, q in enumerate((50, 90, 99))}
    return {f"step_p{q}_ms": percentile(steps, q) for q in (50, 90, 99)}


def percentile(values, p):
    """Nearest-rank percentile (the rule encdec uses)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def machine_info(device="cpu"):
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    isa = "avx512" if " avx512f" in flags else "avx2" if " avx2" in flags else "unknown"
    info = {
        "cpu": model,
        "cores": os.cpu_count(),
        "isa": isa,
        "os": f"{platform.system()} {platform.release()}",
    }
    if device == "cuda":
        import subprocess

        try:
            q = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30,
            )
            name, driver = (q.stdout.splitlines()[0].split(",") + ["?"])[:2]
            info["gpu"], info["cuda_driver"] = name.strip(), driver.strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            info["gpu"] = "unknown (nvidia-smi failed)"
    return info


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def special_ids(cfg):
    """id -> token name for the special ids of a config (the stand-in vocabulary)."""
    names = {}
    for key, name in (
        ("pad_token_id", "<pad>"),
        ("eos_token_id", "</s>"),
        ("bos_token_id", "<s>"),
        ("unk_token_id", "<unk>"),
    ):
        v = cfg.get(key)
        if isinstance(v, list):
            v = v[0] if v else None
        if isinstance(v, int) and v not in names:
            names[v] = name
    if "<unk>" not in names.values():
        # T5 and Marian: unk follows eos; BART: id 3. Pick a free small id.
        for i in (2, 1, 3):
            if i not in names:
                names[i] = "<unk>"
                break
    return names


class StandInTokenizer:
    """Just enough of a tokenizer for CTranslate2's converter: names for ids."""

    def __init__(self, cfg):
        self.vocab_size = cfg.get("decoder_vocab_size") or cfg["vocab_size"]
        self.special = special_ids(cfg)
        by_name = {v: k for k, v in self.special.items()}
        self.pad_token = "<pad>"
        self.eos_token = "</s>"
        self.bos_token = "<s>" if "<s>" in by_name else "<pad>"
        self.unk_token = "<unk>"
        self.unk_token_id = by_name.get("<unk>", 2)
        self.special_tokens_map = {}

    def token(self, i):
        return self.special.get(i, f"t{i}")

    def get_vocab(self):
        return {self.token(i): i for i in range(self.vocab_size)}

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.token(ids)
        return [self.token(i) for i in ids]


def prepare_config(cfg):
    """Config fixes for transformers 5 + CTranslate2."""
    cfg = dict(cfg)
    mt = cfg.get("model_type")
    # CTranslate2's BART-family loaders read config.normalize_before, which
    # transformers 5 configs no longer carry.
    if mt in ("bart", "marian") and "normalize_before" not in cfg:
        cfg["normalize_before"] = False
    if mt in ("mbart", "pegasus", "m2m_100") and "normalize_before" not in cfg:
        cfg["normalize_before"] = True
    # generation defaults come from the workload, never from the config
    for k in ("task_specific_params", "bad_words_ids", "forced_eos_token_id",
              "forced_bos_token_id", "num_beams", "max_length", "min_length"):
        cfg.pop(k, None)
    return cfg


def build_model_dir(cfg, seed, workdir):
    """Random-weight HF model saved to workdir/hf; returns the path."""
    import torch
    import transformers

    out = Path(workdir) / "hf"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    config = transformers.AutoConfig.from_pretrained(str(out))
    torch.manual_seed(seed)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    model.eval()
    model.save_pretrained(str(out))
    return out


def convert_ct2(hf_dir, cfg, workdir):
    import ctranslate2

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return StandInTokenizer(cfg)

    out = Path(workdir) / "ct2"
    Converter(str(hf_dir)).convert(str(out), force=True)
    return out


# --------------------------------------------------------------------------------------
# workers: one engine each, driven over a pipe
# --------------------------------------------------------------------------------------


def worker_main(conn, engine, model_dir, cfg, threads, device="cpu"):
    try:
        runner = make_runner(engine, model_dir, cfg, threads, device)
        conn.send(("ready", runner.versions()))
        while True:
            msg = conn.recv()
            if msg[0] == "quit":
                break
            if msg[0] == "run":
                conn.send(("ok", runner.run(msg[1])))
            elif msg[0] == "detail":
                conn.send(("ok", runner.detail(msg[1])))
            elif msg[0] == "rss":
                conn.send(("ok", peak_rss_mb()))
            elif msg[0] == "device_mem":
                conn.send(("ok", getattr(runner, "peak_device_mb", lambda: None)()))
    except Exception as e:  # report, never hang the parent
        import traceback

        conn.send(("error", f"{engine}: {e}\n{traceback.format_exc()}"))


def make_runner(engine, model_dir, cfg, threads, device="cpu"):
    if engine.startswith("encdec-"):
        return EncdecRunner(model_dir, threads, engine[len("encdec-"):], device)
    if engine.startswith("transformers"):
        return HfRunner(model_dir, cfg, threads, engine_dtype(engine), device)
    if engine.startswith("ct2-"):
        return Ct2Runner(model_dir, cfg, threads, engine[4:], device)
    raise ValueError(f"unknown engine {engine}")


class HfRunner:
    def __init__(self, hf_dir, cfg, threads, dtype="float32", device="cpu"):
        import torch
        import transformers

        torch.set_num_threads(threads)
        self.torch = torch
        self.tf = transformers
        self.device = device
        self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(
            str(hf_dir), dtype=getattr(torch, dtype), attn_implementation="sdpa"
        )
        self.model.to(device)
        self.model.eval()
        self.cfg = cfg
        self.vocab = cfg["vocab_size"]

    def versions(self):
        return {"torch": self.torch.__version__, "transformers": self.tf.__version__}

    def gen_config(self, w):
        cfg = self.cfg
        eos = cfg.get("eos_token_id")
        start = cfg.get("decoder_start_token_id")
        if start is None:
            start = cfg.get("pad_token_id", 0)
        return self.tf.GenerationConfig(
            max_new_tokens=w["new_tokens"],
            min_new_tokens=w["new_tokens"],
            num_beams=w["num_beams"],
            do_sample=False,
            early_stopping=False,
            length_penalty=1.0,
            decoder_start_token_id=start,
            eos_token_id=eos,
            pad_token_id=cfg.get("pad_token_id"),
            bos_token_id=cfg.get("bos_token_id"),
            use_cache=True,
        )

    def sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()

    def peak_device_mb(self):
        if self.device == "cpu":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20

    def run(self, w):
        torch = self.torch
        ids = torch.tensor(source_ids(w["batch"], w["src_len"], self.vocab), device=self.device)
        mask = torch.ones_like(ids)
        stamps = []

        class Stamp(self.tf.LogitsProcessor):
            def __call__(self, input_ids, scores):
                stamps.append(time.perf_counter())
                return scores

        gc = self.gen_config(w)
        with torch.inference_mode():
            self.sync()
            t0 = time.perf_counter()
            self.model.get_encoder()(input_ids=ids, attention_mask=mask)
            self.sync()
            enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=gc,
                logits_processor=self.tf.LogitsProcessorList([Stamp()]),
            )
            self.sync()
            wall = time.perf_counter() - t0
        got = out.shape[1] - 1
        if got != w["new_tokens"]:
            raise RuntimeError(f"transformers generated {got} tokens, expected {w['new_tokens']}")
        steps = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
        return {
            "wall_s": wall,
            "encoder_s": enc,
            "ttft_s": stamps[0] - t0 if stamps else None,
            "steps_ms": steps,
        }

    def detail(self, w):
        return {}


class Ct2Runner:
    def __init__(self, ct2_dir, cfg, threads, compute_type, device="cpu"):
        import ctranslate2

        self.ct2 = ctranslate2
        self.translator = ctranslate2.Translator(
            str(ct2_dir),
            device=device,
            compute_type=compute_type,
            inter_threads=1,
            intra_threads=threads,
        )
        self.tok = StandInTokenizer(cfg)
        self.vocab = cfg["vocab_size"]

    def versions(self):
        return {"ctranslate2": self.ct2.__version__}

    def source(self, w):
        return [
            [self.tok.token(i) for i in row]
            for row in source_ids(w["batch"], w["src_len"], self.vocab)
        ]

    def translate(self, src, w, n, callback=None):
        return self.translator.translate_batch(
            src,
            beam_size=w["num_beams"],
            max_decoding_length=n,
            min_decoding_length=n,
            length_penalty=1.0,
            max_input_length=0,
            callback=callback,
        )

    def run(self, w):
        src = self.source(w)
        t0 = time.perf_counter()
        res = self.translate(src, w, w["new_tokens"])
        wall = time.perf_counter() - t0
        got = len(res[0].hypotheses[0])
        if got != w["new_tokens"]:
            raise RuntimeError(f"ctranslate2 generated {got} tokens, expected {w['new_tokens']}")
        return {"wall_s": wall, "encoder_s": None, "ttft_s": None, "steps_ms": []}

    def detail(self, w):
        """Step times (greedy only: CTranslate2 calls back per token) and time to
        first token, from one extra run outside the timed ones."""
        src = self.source(w)
        if w["num_beams"] != 1:
            t0 = time.perf_counter()
            self.translate(src, w, 1)
            return {"ttft_s": time.perf_counter() - t0, "steps_ms": []}
        seen = {}

        def cb(step):
            seen.setdefault(step.step, time.perf_counter())
            return False

        t0 = time.perf_counter()
        self.translate(src, w, w["new_tokens"], callback=cb)
        stamps = [seen[k] for k in sorted(seen)]
        steps = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
        return {"ttft_s": stamps[0] - t0 if stamps else None, "steps_ms": steps}


class EncdecRunner:
    """`encdec bench --model DIR` on the same saved random model, one timed run per
    call (after one untimed warm-up run in the same process)."""

    def __init__(self, hf_dir, threads, dtype, device="cpu"):
        import subprocess

        self.sp = subprocess
        self.device = device
        self.exe = os.environ.get("ENCDEC_BIN", str(ROOT / "target" / "release" / "encdec"))
        if not Path(self.exe).is_file():
            raise RuntimeError(f"{self.exe} not found: run `cargo build --release` (or set ENCDEC_BIN)")
        self.dir, self.threads, self.dtype = str(hf_dir), threads, dtype

    def versions(self):
        out = self.sp.run([self.exe, "--version"], capture_output=True, text=True)
        return {"encdec": out.stdout.strip()}

    def run(self, w):
        cmd = [self.exe, "bench", "--model", self.dir, "--dtype", self.dtype,
               "--threads", str(self.threads), "--batch", str(w["batch"]),
               "--src-len", str(w["src_len"]), "--new-tokens", str(w["new_tokens"]),
               "--num-beams", str(w["num_beams"]), "--warmup", "1", "--runs", "1",
               "--device", self.device, "--format", "json"]
        out = self.sp.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
        rep = json.loads(out.stdout)
        r = rep["results"][0]
        return {"wall_s": r["median_s"], "encoder_s": r.get("encoder_s"), "ttft_s": r.get("ttft_s"),
                "steps_ms": [], "pcts": [r.get(f"step_p{q}_ms") for q in (50, 90, 99)],
                # the encdec process's own peak RSS and machine facts, not the worker's
                "rss_mb": r.get("peak_rss_mb"), "device_mb": r.get("peak_device_mb"),
                "machine": rep.get("machine")}

    def detail(self, w):
        return {"ttft_s": None, "steps_ms": []}


# --------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------


def parse_workloads(args):
    if args.batch or args.src_len or args.new_tokens or args.num_beams:
        return [(
            "custom",
            dict(
                batch=args.batch or 1,
                src_len=args.src_len or 32,
                num_beams=args.num_beams or 1,
                new_tokens=args.new_tokens or 64,
            ),
        )]
    out = []
    for name in args.workload.split(","):
        name = name.strip().upper()
        if name not in WORKLOADS:
            sys.exit(f"error: unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
        out.append((name, WORKLOADS[name]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--arch", default="t5-small", help="catalogue name (crates/models/src/catalogue)")
    src.add_argument("--config", help="a config.json to build the random model from")
    ap.add_argument("--workload", default="W1,W2,W3,W4")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--src-len", type=int)
    ap.add_argument("--new-tokens", type=int)
    ap.add_argument("--num-beams", type=int)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where every engine runs (cuda: the GPU engines by default)")
    ap.add_argument("--engines", help="comma-separated (default: the device's engines)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3, help="timed runs per engine and workload")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="output JSON (default: stdout)")
    ap.add_argument("--keep", help="keep the converted models in this directory")
    args = ap.parse_args()

    if args.config:
        cfg_path = Path(args.config)
        model_name = cfg_path.parent.name or cfg_path.name
    else:
        cfg_path = CATALOGUE / f"{args.arch}.json"
        model_name = args.arch
        if not cfg_path.is_file():
            known = sorted(p.stem for p in CATALOGUE.glob("*.json"))
            sys.exit(f"error: --arch {args.arch}: not in the catalogue (known: {', '.join(known)})")
    cfg = prepare_config(json.loads(cfg_path.read_text()))
    workloads = parse_workloads(args)
    default_engines = GPU_ENGINES if args.device == "cuda" else ENGINES
    engines = [e.strip() for e in (args.engines or ",".join(default_engines)).split(",") if e.strip()]
    for e in engines:
        if e not in KNOWN_ENGINES:
            sys.exit(f"error: unknown engine {e!r} (known: {', '.join(KNOWN_ENGINES)})")

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_peers_"))
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        log(f"building random {model_name} ...")
        hf_dir = build_model_dir(cfg, args.seed, workdir)
        ct2_dir = None
        if any(e.startswith("ct2-") for e in engines):
            log("converting for CTranslate2 ...")
            ct2_dir = convert_ct2(hf_dir, cfg, workdir)

        ctx = mp.get_context("spawn")
        workers = {}
        versions = {}
        for e in engines:
            parent, child = ctx.Pipe()
            d = ct2_dir if e.startswith("ct2-") else hf_dir
            p = ctx.Process(target=worker_main, args=(child, e, d, cfg, args.threads, args.device),
                            daemon=True)
            p.start()
            msg = parent.recv()
            if msg[0] == "error":
                sys.exit(f"error: {msg[1]}")
            versions[e] = msg[1]
            workers[e] = (p, parent)

        def call(e, *msg):
            conn = workers[e][1]
            conn.send(msg)
            kind, val = conn.recv()
            if kind == "error":
                sys.exit(f"error: {val}")
            return val

        runs = {(e, w): [] for e in engines for w, _ in workloads}
        for name, w in workloads:
            for e in engines:
                for _ in range(args.warmup):
                    call(e, "run", w)
        for r in range(args.rounds):
            order = engines[r % len(engines):] + engines[: r % len(engines)]
            for name, w in workloads:
                for e in order:
                    m = call(e, "run", w)
                    runs[(e, name)].append(m)
                    log(f"round {r + 1}/{args.rounds} {name} {e}: {m['wall_s']:.3f} s")
        details = {(e, name): call(e, "detail", w) for e in engines for name, w in workloads}

        out = []
        for e in engines:
            results = []
            for name, w in workloads:
                ms = runs[(e, name)]
                walls = [m["wall_s"] for m in ms]
                med = statistics.median(walls)
                steps = [s for m in ms for s in m["steps_ms"]] or details[(e, name)].get("steps_ms", [])
                encs = [m["encoder_s"] for m in ms if m["encoder_s"] is not None]
                ttfts = [m["ttft_s"] for m in ms if m["ttft_s"] is not None]
                if not ttfts and details[(e, name)].get("ttft_s") is not None:
                    ttfts = [details[(e, name)]["ttft_s"]]
                results.append({
                    "workload": name,
                    "batch": w["batch"],
                    "src_len": w["src_len"],
                    "new_tokens": w["new_tokens"],
                    "num_beams": w["num_beams"],
                    "tokens_per_s": w["batch"] * w["new_tokens"] / med,
                    "median_s": med,
                    "runs": walls,
                    "min_s": min(walls),
                    "max_s": max(walls),
                    "encoder_s": statistics.median(encs) if encs else None,
                    "ttft_s": statistics.median(ttfts) if ttfts else None,
                    **step_percentiles(steps, [m.get("pcts") for m in ms]),
                    "peak_rss_mb": None,
                })
            rss = call(e, "rss")
            dev_mb = call(e, "device_mem")
            for (name, _), res in zip(workloads, results):
                own = [m["rss_mb"] for m in runs[(e, name)] if m.get("rss_mb") is not None]
                res["peak_rss_mb"] = max(own) if own else rss
                own_dev = [m["device_mb"] for m in runs[(e, name)] if m.get("device_mb") is not None]
                if own_dev or dev_mb is not None:
                    res["peak_device_mb"] = max(own_dev) if own_dev else dev_mb
            machine = next((m["machine"] for (e2, _), ms in runs.items() if e2 == e
                            for m in ms if m.get("machine")), None) or machine_info(args.device)
            out.append({
                "engine": e.split("-")[0].replace("ct2", "ctranslate2"),
                "dtype": engine_dtype(e),
                "model": f"{model_name} (random weights)",
                "device": args.device,
                "threads": args.threads,
                "warmup": args.warmup,
                "runs_per_workload": args.rounds,
                "machine": machine,
                "versions": {"python": platform.python_version(), **versions[e]},
                "results": results,
            })
        for e in engines:
            p, conn = workers[e]
            conn.send(("quit",))
            p.join(timeout=30)
        text = json.dumps(out, indent=2)
        if args.out:
            Path(args.out).write_text(text + "\n")
            log(f"wrote {args.out}")
        else:
            print(text)
        for o in out:
            for res in o["results"]:
                log(f"{o['engine']:>12} {o['dtype']:<7} {res['workload']:<6} "
                    f"{res['tokens_per_s']:9.1f} tok/s  median {res['median_s']:.3f} s")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
