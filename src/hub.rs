//! Resolving `--model`: a local directory, or a Hugging Face hub id found in the
//! local cache (the layout `huggingface_hub` writes) or downloaded with `hf-hub`.
//!
//! Data sets too ([`HubData`]): when the data directories lack a test set that has a
//! hub copy (CNN/DailyMail's `abisee/cnn_dailymail` `3.0.0/test-00000-of-00001.parquet`;
//! newstest2014/2016/2017 as `wmt/wmt14` `de-en/test-00000-of-00001.parquet`, ...: see
//! [`Dataset::hub_source`]), it is taken from the cache
//! (`datasets--abisee--cnn_dailymail/snapshots/<rev>/...`) or, online, downloaded into it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use encdec_eval::datasets::{DataFallback, Dataset, HubSource, Located};
use encdec_eval::EvalError;

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

/// Whether `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) forbids downloads.
pub fn offline() -> bool {
    ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"].iter().any(|k| {
        std::env::var(k)
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false)
    })
}

/// Whether `s` reads as a hub id (`name` or `org/name`, no path syntax).
pub fn looks_like_repo_id(s: &str) -> bool {
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

// ---------------------------------------------------------------------------------
// Data sets

/// The cache folder of a dataset repository (`datasets--org--name`).
fn dataset_folder(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("datasets--{}", repo.replace('/', "--")))
}

/// The files of `src` in a cached snapshot of its repository: the one
/// `refs/<revision>` names, else the only snapshot that has them all.
pub fn cached_dataset_files(cache: &Path, src: &HubSource) -> Option<Vec<PathBuf>> {
    let repo = dataset_folder(cache, src.repo);
    let snapshots = repo.join("snapshots");
    let complete = |dir: &Path| -> Option<Vec<PathBuf>> {
        let files: Vec<PathBuf> = src.files.iter().map(|f| dir.join(f)).collect();
        files.iter().all(|f| f.is_file()).then_some(files)
    };
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join(src.revision)) {
        if let Some(files) = complete(&snapshots.join(rev.trim())) {
            return Some(files);
        }
    }
    let mut found: Vec<Vec<PathBuf>> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter_map(|d| complete(&d))
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// The [`DataFallback`] of the CLI: a registered data set's hub copy from the Hugging
/// Face cache, else downloaded into it with `hf-hub` (unless `HF_HUB_OFFLINE`).
pub struct HubData;

impl DataFallback for HubData {
    fn locate(&self, dataset: &Dataset, not_found: EvalError) -> encdec_eval::Result<Located> {
        locate_dataset(
            dataset,
            not_found,
            &cache_dir(),
            offline(),
            &download_dataset,
        )
    }
}

/// [`HubData`]'s search, with the cache, the offline switch and the download passed in.
fn locate_dataset(
    dataset: &Dataset,
    not_found: EvalError,
    cache: &Path,
    offline: bool,
    download: &dyn Fn(&HubSource, &Path) -> Result<Vec<PathBuf>>,
) -> encdec_eval::Result<Located> {
    let (Some(src), EvalError::DataNotFound { name, looked, hint }) =
        (dataset.hub_source(), &not_found)
    else {
        return Err(not_found);
    };
    if let Some(files) = cached_dataset_files(cache, src) {
        eprintln!(
            "{name}: using the Hugging Face cache copy {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(Located {
            format: src.format,
            files,
            hub: Some(*src),
        });
    }
    let in_cache = src
        .files
        .iter()
        .map(|f| {
            dataset_folder(cache, src.repo)
                .join("snapshots")
                .join("*")
                .join(f)
                .display()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(", ");
    let files = src.files.join(" ");
    let fetch = format!(
        "`huggingface-cli download {} {files} --repo-type dataset` (it goes into the Hugging \
         Face cache, where encdec finds it)",
        src.repo
    );
    let fail = |why: String| EvalError::DataNotFound {
        name: name.clone(),
        looked: format!("{looked}, {in_cache} (Hugging Face cache)"),
        hint: format!("{why}; fetch it with {fetch}, or {hint}"),
    };
    if offline {
        return Err(fail(format!(
            "HF_HUB_OFFLINE is set, so {} {files} was not downloaded from the Hugging Face hub",
            src.repo
        )));
    }
    eprintln!(
        "{name}: not in the data directories or the Hugging Face cache; downloading {} {files} \
         from the Hugging Face hub into {}",
        src.repo,
        cache.display()
    );
    match download(src, cache) {
        Ok(files) => Ok(Located {
            format: src.format,
            files,
            hub: Some(*src),
        }),
        Err(e) => {
            let e = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            Err(fail(format!(
                "the download of {} {files} from the Hugging Face hub failed ({e})",
                src.repo
            )))
        }
    }
}

#[cfg(feature = "hub")]
fn download_dataset(src: &HubSource, cache: &Path) -> Result<Vec<PathBuf>> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    let api = ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(true)
        .build()?;
    let repo = api.repo(Repo::with_revision(
        src.repo.to_string(),
        RepoType::Dataset,
        src.revision.to_string(),
    ));
    src.files
        .iter()
        .map(|f| repo.get(f).map_err(|e| anyhow::anyhow!("{f}: {e}")))
        .collect()
}

#[cfg(not(feature = "hub"))]
fn download_dataset(_src: &HubSource, _cache: &Path) -> Result<Vec<PathBuf>> {
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

    fn cnndm_not_found() -> EvalError {
        EvalError::DataNotFound {
            name: "cnndm".into(),
            looked: "/data/cnndm/test.source + /data/cnndm/test.target".into(),
            hint: "get it with `python ...`".into(),
        }
    }

    fn no_download(_: &HubSource, _: &Path) -> Result<Vec<PathBuf>> {
        panic!("no download expected")
    }

    #[test]
    fn a_cached_dataset_is_found_through_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let cnndm = Dataset::get("cnndm").unwrap();
        let src = cnndm.hub_source().unwrap();
        let repo = tmp.path().join("datasets--abisee--cnn_dailymail");
        let snap = repo.join("snapshots").join("rev1");
        std::fs::create_dir_all(snap.join("3.0.0")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "rev1\n").unwrap();
        assert_eq!(cached_dataset_files(tmp.path(), src), None, "no file yet");
        let file = snap.join("3.0.0/test-00000-of-00001.parquet");
        std::fs::write(&file, "PAR1").unwrap();
        assert_eq!(
            cached_dataset_files(tmp.path(), src),
            Some(vec![file.clone()])
        );
        let located =
            locate_dataset(cnndm, cnndm_not_found(), tmp.path(), true, &no_download).unwrap();
        assert_eq!(located.files, vec![file]);
        assert_eq!(located.format, encdec_eval::datasets::Format::Parquet);
        assert_eq!(located.hub.as_ref(), Some(src));
    }

    fn not_found(name: &str) -> EvalError {
        EvalError::DataNotFound {
            name: name.into(),
            looked: "x".into(),
            hint: "y".into(),
        }
    }

    #[test]
    fn a_cached_wmt_test_set_is_found_and_read() {
        let tmp = tempfile::tempdir().unwrap();
        let wmt = Dataset::get("wmt14-en-de").unwrap();
        let src = wmt.hub_source().unwrap();
        assert_eq!(
            (src.repo, src.files),
            ("wmt/wmt14", &["de-en/test-00000-of-00001.parquet"][..])
        );
        let repo = tmp.path().join("datasets--wmt--wmt14");
        let snap = repo.join("snapshots").join("rev1");
        std::fs::create_dir_all(snap.join("de-en")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "rev1\n").unwrap();
        // wmt14-en-fr's file (fr-en/...) is a different one of the same repository.
        let fr = Dataset::get("wmt14-en-fr").unwrap();
        assert_eq!(cached_dataset_files(tmp.path(), src), None, "no file yet");
        let file = snap.join("de-en/test-00000-of-00001.parquet");
        // The stand-in tools/make_wmt_parquet_fixture.py made.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/datasets/wmt14-de-en-test.parquet");
        std::fs::copy(&fixture, &file).unwrap();
        assert_eq!(
            cached_dataset_files(tmp.path(), src),
            Some(vec![file.clone()])
        );
        assert_eq!(
            cached_dataset_files(tmp.path(), fr.hub_source().unwrap()),
            None
        );
        let located = locate_dataset(
            wmt,
            not_found("wmt14-en-de"),
            tmp.path(),
            true,
            &no_download,
        )
        .unwrap();
        assert_eq!(located.files, vec![file]);
        assert_eq!(located.hub.as_ref(), Some(src));
        #[cfg(feature = "parquet")]
        {
            let ex = wmt.read(&located).unwrap();
            assert_eq!(ex.len(), 3003);
            assert_eq!(
                (ex.sources[1].as_str(), ex.references[1].as_str()),
                ("the large house", "das kleine Haus")
            );
        }
        // Offline and not cached, the error names the hub file and how to fetch it.
        let fr_msg = locate_dataset(fr, not_found("wmt14-en-fr"), tmp.path(), true, &no_download)
            .unwrap_err()
            .to_string();
        for want in [
            "datasets--wmt--wmt14/snapshots/*/fr-en/test-00000-of-00001.parquet",
            "HF_HUB_OFFLINE is set",
            "huggingface-cli download wmt/wmt14 fr-en/test-00000-of-00001.parquet --repo-type dataset",
        ] {
            assert!(fr_msg.contains(want), "{want:?} not in: {fr_msg}");
        }
    }

    #[test]
    fn offline_without_data_names_what_to_get() {
        let tmp = tempfile::tempdir().unwrap();
        let cnndm = Dataset::get("cnndm").unwrap();
        let msg = locate_dataset(cnndm, cnndm_not_found(), tmp.path(), true, &no_download)
            .unwrap_err()
            .to_string();
        for want in [
            "/data/cnndm/test.source",
            "datasets--abisee--cnn_dailymail/snapshots/*/3.0.0/test-00000-of-00001.parquet",
            "HF_HUB_OFFLINE is set",
            "huggingface-cli download abisee/cnn_dailymail 3.0.0/test-00000-of-00001.parquet --repo-type dataset",
            "python ...",
        ] {
            assert!(msg.contains(want), "{want:?} not in: {msg}");
        }
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_failed_download_is_one_line_and_wmt22_has_no_hub_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let cnndm = Dataset::get("cnndm").unwrap();
        let fails =
            |_: &HubSource, _: &Path| -> Result<Vec<PathBuf>> { bail!("dns error:\nno network") };
        let msg = locate_dataset(cnndm, cnndm_not_found(), tmp.path(), false, &fails)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("download of abisee/cnn_dailymail"), "{msg}");
        assert!(msg.contains("dns error: no network"), "{msg}");
        // newstest2017 from the hub: the failure names wmt/wmt17 and stays one line.
        let wmt17 = Dataset::get("wmt17-en-zh").unwrap();
        let msg = locate_dataset(wmt17, not_found("wmt17-en-zh"), tmp.path(), false, &fails)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("download of wmt/wmt17 zh-en/test-00000-of-00001.parquet"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        // generaltest2022 is not on the hub: the data directory error is left as it is.
        let wmt22 = Dataset::get("wmt22-en-de").unwrap();
        assert_eq!(wmt22.hub_source(), None);
        let msg = locate_dataset(
            wmt22,
            not_found("wmt22-en-de"),
            tmp.path(),
            false,
            &no_download,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(msg, "data set 'wmt22-en-de' not found; looked for: x; y");
    }
}
