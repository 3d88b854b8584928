//! Resolving `--model`: a local directory, or a Hugging Face hub id found in the
//! local cache (the layout `huggingface_hub` writes) or downloaded with `hf-hub`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Files a seq2seq checkpoint directory may need; the ones a repo lacks are skipped.
const WANTED: &[&str] = &[
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "source.spm",
    "target.spm",
    "vocab.json",
    "merges.txt",
];

/// The hub cache folder, as `huggingface_hub` chooses it.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("huggingface").join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

fn offline() -> bool {
    ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"].iter().any(|k| {
        std::env::var(k)
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false)
    })
}

/// Whether `s` reads as a hub id (`name` or `org/name`, no path syntax).
fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// The snapshot folder of `repo_id` in `cache` (refs/main, else the only snapshot),
/// if it holds a config.json.
pub fn cached_snapshot(cache: &Path, repo_id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let from_ref = std::fs::read_to_string(repo.join("refs").join("main"))
        .ok()
        .map(|h| snapshots.join(h.trim()));
    let dir = from_ref.filter(|d| d.is_dir()).or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        (dirs.len() == 1).then(|| dirs.remove(0))
    })?;
    let has_weights = dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file();
    (dir.join("config.json").is_file() && has_weights).then_some(dir)
}

/// A local checkpoint directory for `spec`.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        bail!("--model {spec}: not a directory (give a checkpoint directory or a hub id)");
    }
    if !looks_like_repo_id(spec) {
        bail!("--model {spec}: no such directory");
    }
    let cache = cache_dir();
    if let Some(dir) = cached_snapshot(&cache, spec) {
        return Ok(dir);
    }
    let looked = cache.join(format!("models--{}", spec.replace('/', "--")));
    if offline() {
        bail!(
            "--model {spec}: no such directory, and not in the Hugging Face cache (looked in {}); \
             HF_HUB_OFFLINE is set, so nothing was downloaded",
            looked.display()
        );
    }
    download(spec, &cache).map_err(|e| {
        anyhow::anyhow!(
            "--model {spec}: no such directory, not in the Hugging Face cache (looked in {}), \
             and the download failed: {e:#}",
            looked.display()
        )
    })
}

#[cfg(feature = "hub")]
fn download(repo_id: &str, cache: &Path) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let api = ApiBuilder::new()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(true)
        .build()?;
    let repo = api.model(repo_id.to_string());
    let info = repo.info()?;
    let present: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    if !present.contains(&"config.json") {
        bail!("{repo_id} has no config.json on the hub");
    }
    let mut wanted: Vec<String> = WANTED
        .iter()
        .filter(|f| present.contains(f))
        .map(|f| f.to_string())
        .collect();
    if present.contains(&"model.safetensors.index.json") {
        let index = repo.get("model.safetensors.index.json")?;
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index)?)?;
        if let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) {
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            wanted.extend(shards);
        }
    } else if !present.contains(&"model.safetensors") {
        bail!(
            "{repo_id} has no safetensors weights on the hub (files: {}); encdec reads safetensors only",
            present.join(", ")
        );
    }
    let mut dir = None;
    for f in &wanted {
        let p = repo.get(f)?;
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| anyhow::anyhow!("{repo_id}: nothing downloaded"))
}

#[cfg(not(feature = "hub"))]
fn download(_repo_id: &str, _cache: &Path) -> Result<PathBuf> {
    let _ = WANTED;
    bail!("this build of encdec has no hub download (built without the `hub` feature)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths_are_told_apart() {
        assert!(looks_like_repo_id("facebook/bart-large-cnn"));
        assert!(looks_like_repo_id("t5-small"));
        assert!(!looks_like_repo_id("./models/x"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
    }

    #[test]
    fn a_snapshot_is_found_through_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--m");
        let snap = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123\n").unwrap();
        assert_eq!(cached_snapshot(tmp.path(), "org/m"), None, "no files yet");
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::write(snap.join("model.safetensors"), "").unwrap();
        assert_eq!(cached_snapshot(tmp.path(), "org/m"), Some(snap));
        assert_eq!(cached_snapshot(tmp.path(), "org/other"), None);
    }
}
