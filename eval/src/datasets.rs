//! Evaluation data sets: a registry of the test sets `encdec eval` knows, and loaders
//! for the file forms they come in.
//!
//! Forms:
//! - WMT plain text, sacreBLEU's one-segment-per-line form (`newstest2014.en-de.en` +
//!   `newstest2014.en-de.de`; `generaltest2022.en-de.en` + `generaltest2022.en-de.ref.A.de`).
//!   Lines end at `\n`; each line loses its trailing whitespace (Python's `str.rstrip()`,
//!   as sacreBLEU's command line reads references).
//! - WMT SGML (`newstest2014-deen-src.en.sgm` + `newstest2014-deen-ref.de.sgm`), read the
//!   way sacreBLEU turns them into text: every line that starts with `<seg ` gives one
//!   segment, the text between the tag and the last `</seg>`, stripped and with runs of
//!   whitespace collapsed to one space. sacreBLEU does not unescape entities (`&amp;` stays
//!   `&amp;`), and neither does [`parse_sgml`]; [`unescape_entities`] is there for callers
//!   that want Python's `html.unescape` behaviour for the common entities.
//! - CNN/DailyMail as `test.source` / `test.target` line files (fairseq and the
//!   transformers summarization examples), JSONL (one object per line with
//!   `article`/`highlights` as the Hugging Face dataset has them, or `document`/`summary`,
//!   or `source`/`target`; an `id` field, when every line has one, gives the ids), and the
//!   Hugging Face parquet shards (`3.0.0/test-*.parquet`) with the `parquet` cargo feature.
//! - WMT as the Hugging Face hub's parquet files (`wmt/wmt14` `de-en/test-00000-of-00001.parquet`,
//!   ...), with the `parquet` cargo feature: one struct column `translation` with a string
//!   field per language code; [`load_parquet_translation`] takes the source from the
//!   source language's field and the reference from the target language's. The text is
//!   taken as stored. It is the `datasets` library's conversion of the same newstest SGML
//!   files sacreBLEU reads, but it is not verified here to equal sacreBLEU's text segment
//!   for segment (no network here), so a run on it says where its data came from
//!   ([`Located::hub`]).
//!
//! Data directories are searched in this order: the explicit `--data DIR` (only it, when
//! given), else `$ENCDEC_DATA`, then `../shared/data` relative to the working directory.
//! Inside a data directory WMT files are looked for under `wmt/` and at the top, CNN/DM
//! files under `cnndm/`, `cnn_dailymail/` and at the top. This crate downloads nothing:
//! when the files are missing, the error names every file that was tried and how to get
//! them. A data set with a [`HubSource`] (CNN/DailyMail; newstest2014 en-de and en-fr,
//! newstest2016 en-ro, newstest2017 en-de and en-zh) can also come from the Hugging Face
//! hub: [`Dataset::locate_or`] hands the search to a [`DataFallback`] when no `--data`
//! directory was given and the data directories lack the files; the `encdec` binary's
//! fallback looks in the Hugging Face cache and downloads when online. The later WMT
//! sets (wmt19, wmt20, wmt22) have no test split on the hub and come from data
//! directories only.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use crate::error::{EvalError, Result};

/// Environment variable naming a data directory.
pub const DATA_ENV: &str = "ENCDEC_DATA";
/// The data directory used when neither `--data` nor `$ENCDEC_DATA` is given,
/// relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "../shared/data";

/// Source texts, references and (when the files carry them) ids of one test set, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Examples {
    pub sources: Vec<String>,
    pub references: Vec<String>,
    pub ids: Option<Vec<String>>,
}

impl Examples {
    /// Builds examples, checking that sources, references and ids (if any) have the
    /// same length.
    pub fn new(
        sources: Vec<String>,
        references: Vec<String>,
        ids: Option<Vec<String>>,
    ) -> Result<Self> {
        if sources.len() != references.len() {
            return Err(EvalError::Invalid(format!(
                "{} sources but {} references: they must pair up one to one",
                sources.len(),
                references.len()
            )));
        }
        if let Some(ids) = &ids {
            if ids.len() != sources.len() {
                return Err(EvalError::Invalid(format!(
                    "{} ids for {} examples",
                    ids.len(),
                    sources.len()
                )));
            }
        }
        Ok(Self {
            sources,
            references,
            ids,
        })
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The first `n` examples (all of them when there are fewer).
    pub fn limit(mut self, n: usize) -> Self {
        self.sources.truncate(n);
        self.references.truncate(n);
        if let Some(ids) = &mut self.ids {
            ids.truncate(n);
        }
        self
    }

    /// Shard `index` of `count` contiguous shards: examples
    /// `[index*len/count, (index+1)*len/count)` (see [`shard_range`]).
    pub fn shard(self, index: usize, count: usize) -> Result<Self> {
        let range = shard_range(self.len(), index, count)?;
        Ok(self.slice(range))
    }

    /// The examples in `range` (clamped to the available ones).
    pub fn slice(self, range: Range<usize>) -> Self {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        let cut = |mut v: Vec<String>| -> Vec<String> {
            v.truncate(end);
            v.drain(..start);
            v
        };
        Self {
            sources: cut(self.sources),
            references: cut(self.references),
            ids: self.ids.map(cut),
        }
    }
}

/// The example range of shard `index` of `count` over `len` examples: contiguous,
/// `[index*len/count, (index+1)*len/count)`, so the shards partition `0..len` in order
/// and their sizes differ by at most one. `index` is 0-based (Slurm array task ids and
/// Kubernetes indexed-Job completion indexes both start at 0).
pub fn shard_range(len: usize, index: usize, count: usize) -> Result<Range<usize>> {
    if count == 0 {
        return Err(EvalError::Invalid(
            "shard count must be at least 1 (shard I/N needs N >= 1)".into(),
        ));
    }
    if index >= count {
        return Err(EvalError::Invalid(format!(
            "shard index {index} out of range for {count} shards (valid: 0..={})",
            count - 1
        )));
    }
    let at = |i: usize| ((i as u128 * len as u128) / count as u128) as usize;
    Ok(at(index)..at(index + 1))
}

/// A `--shard I/N` specification: shard `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The example range of this shard over `len` examples.
    pub fn range(&self, len: usize) -> Result<Range<usize>> {
        shard_range(len, self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = EvalError;

    /// Parses `I/N` (for example `0/4`); `I` must be below `N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            EvalError::Invalid(format!(
                "invalid shard '{s}': expected I/N with 0 <= I < N, for example 0/4"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a data set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Summarization,
    Translation,
}

/// The on-disk form a data set was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Plain text, one segment per line: a source file and a reference file.
    WmtText,
    /// WMT SGML: a `-src.*.sgm` and a `-ref.*.sgm` file.
    WmtSgml,
    /// `test.source` + `test.target`, one example per line.
    SourceTarget,
    /// One JSON object per line.
    Jsonl,
    /// Hugging Face `datasets` parquet shards (needs the `parquet` feature).
    Parquet,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::WmtText => "WMT plain text",
            Format::WmtSgml => "WMT SGML",
            Format::SourceTarget => ".source/.target",
            Format::Jsonl => "JSONL",
            Format::Parquet => "parquet",
        })
    }
}

/// A copy of a registered data set on the Hugging Face hub, in a form this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HubSource {
    /// Dataset repository id (`huggingface-cli download REPO --repo-type dataset`).
    pub repo: &'static str,
    /// Revision (branch) the files are taken from.
    pub revision: &'static str,
    /// Files in the repository, in reading order.
    pub files: &'static [&'static str],
    /// How to read them.
    pub format: Format,
    /// What to know about the text of this copy (empty when nothing); reports print it.
    pub note: &'static str,
}

impl HubSource {
    /// `REPO FILE.. (revision REV)`, as reports name the copy.
    pub fn describe(&self) -> String {
        format!(
            "{} {} (revision {})",
            self.repo,
            self.files.join(" "),
            self.revision
        )
    }

    /// [`HubSource::describe`] and, when there is one, the note on its text.
    pub fn provenance(&self) -> String {
        if self.note.is_empty() {
            self.describe()
        } else {
            format!("{}; {}", self.describe(), self.note)
        }
    }
}

/// CNN/DailyMail 3.0.0's test split as the hub's parquet conversion stores it
/// (columns `article`, `highlights`, `id`).
const CNNDM_HUB: HubSource = HubSource {
    repo: "abisee/cnn_dailymail",
    revision: "main",
    files: &["3.0.0/test-00000-of-00001.parquet"],
    format: Format::Parquet,
    note: "",
};

/// What the WMT hub copies' reports say about their text.
const WMT_HUB_NOTE: &str = "the hub's text (the `datasets` conversion of the newstest SGML \
     files), not verified to equal sacreBLEU's";

/// The test split of one language pair of the hub's `wmt/wmtNN` data sets, on `main`
/// since their conversion to parquet: one `translation` struct column, a string field
/// per language code, read with [`load_parquet_translation`].
///
/// The file paths were checked, without network access from here, against stored
/// copies of the hub's pages and against other projects' code that downloads them; no
/// file was downloaded. `wmt/wmt14` `fr-en/test-00000-of-00001.parquet` (file page,
/// "Add fr-en data files"), `wmt/wmt16` `ro-en/test-00000-of-00001.parquet` ("Add ro-en
/// data files", test split 1,999 rows in the card), `wmt/wmt17`
/// `de-en/test-00000-of-00001.parquet` ("Add de-en data files", 3,004 rows) and
/// `zh-en/test-00000-of-00001.parquet` (`main` after "Convert dataset to Parquet (#8)",
/// 2,001 rows): seen in the hub's file listings and commits. `wmt/wmt14`
/// `de-en/test-00000-of-00001.parquet`: seen only in code that fetches it
/// (`hf_hub_download("wmt/wmt14", "de-en/test-00000-of-00001.parquet")`, `hf://` paths),
/// laid out as its fr-en sibling. The hub's `refs/convert/parquet` branch has other
/// names (`de-en/test/0000.parquet`); these are `main`'s. The row counts are the
/// registry's; [`Dataset::read`] checks them as for any other form.
const fn wmt_hub(repo: &'static str, files: &'static [&'static str]) -> HubSource {
    HubSource {
        repo,
        revision: "main",
        files,
        format: Format::Parquet,
        note: WMT_HUB_NOTE,
    }
}

const WMT14_DE_EN_HUB: HubSource = wmt_hub("wmt/wmt14", &["de-en/test-00000-of-00001.parquet"]);
const WMT14_FR_EN_HUB: HubSource = wmt_hub("wmt/wmt14", &["fr-en/test-00000-of-00001.parquet"]);
const WMT16_RO_EN_HUB: HubSource = wmt_hub("wmt/wmt16", &["ro-en/test-00000-of-00001.parquet"]);
const WMT17_DE_EN_HUB: HubSource = wmt_hub("wmt/wmt17", &["de-en/test-00000-of-00001.parquet"]);
const WMT17_ZH_EN_HUB: HubSource = wmt_hub("wmt/wmt17", &["zh-en/test-00000-of-00001.parquet"]);

/// Finds a data set's files when the data directories do not have them. The eval crate
/// has no network code; the `encdec` binary implements this over the Hugging Face
/// cache and `hf-hub` (see [`Dataset::locate_or`]).
pub trait DataFallback {
    /// `not_found` is the [`EvalError::DataNotFound`] of the data directory search; an
    /// error returned here should still name what was tried there and how to get it.
    fn locate(&self, dataset: &Dataset, not_found: EvalError) -> Result<Located>;
}

/// Where a data set's files were found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located {
    pub format: Format,
    /// Source then reference file for the two-file forms; one file for JSONL; the
    /// shards, sorted, for parquet.
    pub files: Vec<PathBuf>,
    /// The hub copy these files are (from the Hugging Face cache or just downloaded);
    /// `None` for files found in a data directory.
    pub hub: Option<HubSource>,
}

#[derive(Debug)]
enum Layout {
    Wmt {
        /// Directories under a data root, in search order ("" = the root itself).
        dirs: &'static [&'static str],
        /// (source, reference) plain-text file names.
        text: &'static [(&'static str, &'static str)],
        /// (source, reference) SGML file names.
        sgml: &'static [(&'static str, &'static str)],
        /// sacreBLEU test set and language pair that `--echo src` / `--echo ref` print.
        sacrebleu: (&'static str, &'static str),
        /// Extra ways to get the files.
        extra_hint: &'static str,
        /// The test set on the Hugging Face hub, where it has one.
        hub: Option<&'static HubSource>,
    },
    Cnndm,
}

/// One registered test set.
#[derive(Debug)]
pub struct Dataset {
    /// Registry name, as `--dataset` takes it.
    pub name: &'static str,
    pub description: &'static str,
    pub task: Task,
    pub src_lang: &'static str,
    pub tgt_lang: &'static str,
    /// Number of examples of the standard version.
    pub lines: usize,
    /// Other accepted example counts (another published version of the same set).
    pub alt_lines: &'static [usize],
    layout: Layout,
}

const WMT_DIRS: &[&str] = &["wmt", ""];
const WMT22_DIRS: &[&str] = &["wmt/generaltest2022", "generaltest2022", "wmt", ""];
const CNNDM_DIRS: &[&str] = &["cnndm", "cnn_dailymail", ""];
macro_rules! wmt {
    ($name:expr, $desc:expr, $src:expr, $tgt:expr, $lines:expr, $alt:expr,
     text: [$(($ts:expr, $tr:expr)),*], sgml: [$(($ss:expr, $sr:expr)),*],
     sacrebleu: ($t:expr, $lp:expr), dirs: $dirs:expr, hint: $hint:expr, hub: $hub:expr) => {
        Dataset {
            name: $name,
            description: $desc,
            task: Task::Translation,
            src_lang: $src,
            tgt_lang: $tgt,
            lines: $lines,
            alt_lines: $alt,
            layout: Layout::Wmt {
                dirs: $dirs,
                text: &[$(($ts, $tr)),*],
                sgml: &[$(($ss, $sr)),*],
                sacrebleu: ($t, $lp),
                extra_hint: $hint,
                hub: $hub,
            },
        }
    };
}

static DATASETS: &[Dataset] = &[
    Dataset {
        name: "cnndm",
        description: "CNN/DailyMail 3.0.0 test split (abisee/cnn_dailymail)",
        task: Task::Summarization,
        src_lang: "en",
        tgt_lang: "en",
        lines: 11490,
        alt_lines: &[],
        layout: Layout::Cnndm,
    },
    wmt!("wmt14-en-de", "newstest2014 English-German, full set (sacreBLEU wmt14/full)", "en", "de", 3003, &[2737],
        text: [("newstest2014.en-de.en", "newstest2014.en-de.de")],
        sgml: [("newstest2014-deen-src.en.sgm", "newstest2014-deen-ref.de.sgm")],
        sacrebleu: ("wmt14/full", "en-de"), dirs: WMT_DIRS,
        hint: "the 2,737-line filtered set (sacrebleu -t wmt14) is accepted too, but its scores are not comparable with the full set's", hub: Some(&WMT14_DE_EN_HUB)),
    wmt!("wmt14-en-fr", "newstest2014 English-French (sacreBLEU wmt14/full)", "en", "fr", 3003, &[],
        text: [("newstest2014.en-fr.en", "newstest2014.en-fr.fr")],
        sgml: [("newstest2014-fren-src.en.sgm", "newstest2014-fren-ref.fr.sgm")],
        sacrebleu: ("wmt14/full", "en-fr"), dirs: WMT_DIRS, hint: "", hub: Some(&WMT14_FR_EN_HUB)),
    wmt!("wmt16-en-ro", "newstest2016 English-Romanian", "en", "ro", 1999, &[],
        text: [("newstest2016.en-ro.en", "newstest2016.en-ro.ro")],
        sgml: [("newstest2016-enro-src.en.sgm", "newstest2016-enro-ref.ro.sgm")],
        sacrebleu: ("wmt16", "en-ro"), dirs: WMT_DIRS, hint: "", hub: Some(&WMT16_RO_EN_HUB)),
    wmt!("wmt17-en-de", "newstest2017 English-German", "en", "de", 3004, &[],
        text: [("newstest2017.en-de.en", "newstest2017.en-de.de")],
        sgml: [("newstest2017-ende-src.en.sgm", "newstest2017-ende-ref.de.sgm")],
        sacrebleu: ("wmt17", "en-de"), dirs: WMT_DIRS, hint: "", hub: Some(&WMT17_DE_EN_HUB)),
    wmt!("wmt17-en-zh", "newstest2017 English-Chinese", "en", "zh", 2001, &[],
        text: [("newstest2017.en-zh.en", "newstest2017.en-zh.zh")],
        sgml: [("newstest2017-enzh-src.en.sgm", "newstest2017-enzh-ref.zh.sgm")],
        sacrebleu: ("wmt17", "en-zh"), dirs: WMT_DIRS, hint: "", hub: Some(&WMT17_ZH_EN_HUB)),
    wmt!("wmt19-en-de", "newstest2019 English-German (English-original)", "en", "de", 1997, &[],
        text: [("newstest2019.en-de.en", "newstest2019.en-de.de")],
        sgml: [("newstest2019-ende-src.en.sgm", "newstest2019-ende-ref.de.sgm")],
        sacrebleu: ("wmt19", "en-de"), dirs: WMT_DIRS, hint: "", hub: None),
    wmt!("wmt19-de-en", "newstest2019 German-English (German-original)", "de", "en", 2000, &[],
        text: [("newstest2019.de-en.de", "newstest2019.de-en.en")],
        sgml: [("newstest2019-deen-src.de.sgm", "newstest2019-deen-ref.en.sgm")],
        sacrebleu: ("wmt19", "de-en"), dirs: WMT_DIRS, hint: "", hub: None),
    wmt!("wmt19-en-zh", "newstest2019 English-Chinese", "en", "zh", 1997, &[],
        text: [("newstest2019.en-zh.en", "newstest2019.en-zh.zh")],
        sgml: [("newstest2019-enzh-src.en.sgm", "newstest2019-enzh-ref.zh.sgm")],
        sacrebleu: ("wmt19", "en-zh"), dirs: WMT_DIRS, hint: "", hub: None),
    wmt!("wmt20-en-de", "newstest2020 English-German (reference A)", "en", "de", 1418, &[],
        text: [("newstest2020.en-de.en", "newstest2020.en-de.de")],
        sgml: [("newstest2020-ende-src.en.sgm", "newstest2020-ende-ref.de.sgm")],
        sacrebleu: ("wmt20", "en-de"), dirs: WMT_DIRS, hint: "", hub: None),
    wmt!("wmt20-en-zh", "newstest2020 English-Chinese", "en", "zh", 1418, &[],
        text: [("newstest2020.en-zh.en", "newstest2020.en-zh.zh")],
        sgml: [("newstest2020-enzh-src.en.sgm", "newstest2020-enzh-ref.zh.sgm")],
        sacrebleu: ("wmt20", "en-zh"), dirs: WMT_DIRS, hint: "", hub: None),
    wmt!("wmt22-en-de", "WMT22 general test English-German (reference A)", "en", "de", 2037, &[],
        text: [("generaltest2022.en-de.en", "generaltest2022.en-de.ref.A.de"),
               ("generaltest2022.en-de.src.en", "generaltest2022.en-de.ref.A.de")],
        sgml: [], sacrebleu: ("wmt22", "en-de"), dirs: WMT22_DIRS, hint: "", hub: None),
    wmt!("wmt22-de-en", "WMT22 general test German-English (reference A)", "de", "en", 1984, &[],
        text: [("generaltest2022.de-en.de", "generaltest2022.de-en.ref.A.en"),
               ("generaltest2022.de-en.src.de", "generaltest2022.de-en.ref.A.en")],
        sgml: [], sacrebleu: ("wmt22", "de-en"), dirs: WMT22_DIRS, hint: "", hub: None),
    wmt!("wmt22-en-zh", "WMT22 general test English-Chinese (reference A)", "en", "zh", 2037, &[],
        text: [("generaltest2022.en-zh.en", "generaltest2022.en-zh.ref.A.zh"),
               ("generaltest2022.en-zh.src.en", "generaltest2022.en-zh.ref.A.zh")],
        sgml: [], sacrebleu: ("wmt22", "en-zh"), dirs: WMT22_DIRS, hint: "", hub: None),
    wmt!("wmt22-zh-en", "WMT22 general test Chinese-English (reference A)", "zh", "en", 1875, &[],
        text: [("generaltest2022.zh-en.zh", "generaltest2022.zh-en.ref.A.en"),
               ("generaltest2022.zh-en.src.zh", "generaltest2022.zh-en.ref.A.en")],
        sgml: [], sacrebleu: ("wmt22", "zh-en"), dirs: WMT22_DIRS, hint: "", hub: None),
];

/// The data directories searched, in order: `explicit` alone when given; otherwise
/// `$ENCDEC_DATA` (when set and non-empty) and then `../shared/data`.
pub fn data_roots(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir.to_path_buf()];
    }
    let mut roots = Vec::new();
    if let Some(env) = std::env::var_os(DATA_ENV) {
        if !env.is_empty() {
            roots.push(PathBuf::from(env));
        }
    }
    roots.push(PathBuf::from(DEFAULT_DATA_DIR));
    roots
}

fn join(root: &Path, dir: &str, file: &str) -> PathBuf {
    if dir.is_empty() {
        root.join(file)
    } else {
        root.join(dir).join(file)
    }
}

impl Dataset {
    /// Every registered data set.
    pub fn all() -> &'static [Dataset] {
        DATASETS
    }

    /// The registered names, in registry order.
    pub fn names() -> Vec<&'static str> {
        DATASETS.iter().map(|d| d.name).collect()
    }

    /// The data set called `name`; an unknown name is an error listing the valid ones.
    pub fn get(name: &str) -> Result<&'static Dataset> {
        DATASETS
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| EvalError::Unknown {
                what: "data set",
                name: name.to_string(),
                valid: Self::names().join(", "),
            })
    }

    /// Loads data set `name` from the first data directory that has its files
    /// (see [`data_roots`]).
    pub fn load(name: &str, data_dir: Option<&Path>) -> Result<Examples> {
        Self::get(name)?.load_from(data_dir)
    }

    /// Finds and reads this data set's files.
    pub fn load_from(&self, data_dir: Option<&Path>) -> Result<Examples> {
        let located = self.locate(data_dir)?;
        self.read(&located)
    }

    /// Finds this data set's files without reading them.
    pub fn locate(&self, data_dir: Option<&Path>) -> Result<Located> {
        let roots = data_roots(data_dir);
        let mut looked: Vec<String> = Vec::new();
        let mut parquet_without_feature: Option<PathBuf> = None;
        for root in &roots {
            if !root.is_dir() {
                looked.push(format!("{} (directory does not exist)", root.display()));
                continue;
            }
            match &self.layout {
                Layout::Wmt {
                    dirs, text, sgml, ..
                } => {
                    for dir in dirs.iter() {
                        let pairs = text
                            .iter()
                            .map(|p| (Format::WmtText, p))
                            .chain(sgml.iter().map(|p| (Format::WmtSgml, p)));
                        for (format, (src, reference)) in pairs {
                            let s = join(root, dir, src);
                            let r = join(root, dir, reference);
                            if s.is_file() && r.is_file() {
                                return Ok(Located {
                                    format,
                                    files: vec![s, r],
                                    hub: None,
                                });
                            }
                            looked.push(format!("{} + {}", s.display(), r.display()));
                        }
                    }
                }
                Layout::Cnndm => {
                    for dir in CNNDM_DIRS {
                        let s = join(root, dir, "test.source");
                        let t = join(root, dir, "test.target");
                        if s.is_file() && t.is_file() {
                            return Ok(Located {
                                format: Format::SourceTarget,
                                files: vec![s, t],
                                hub: None,
                            });
                        }
                        looked.push(format!("{} + {}", s.display(), t.display()));
                        let j = join(root, dir, "test.jsonl");
                        if j.is_file() {
                            return Ok(Located {
                                format: Format::Jsonl,
                                files: vec![j],
                                hub: None,
                            });
                        }
                        looked.push(j.display().to_string());
                        for sub in ["3.0.0", ""] {
                            let d = join(root, dir, sub);
                            let shards = parquet_shards(&d, "test");
                            if !shards.is_empty() {
                                if cfg!(feature = "parquet") {
                                    return Ok(Located {
                                        format: Format::Parquet,
                                        files: shards,
                                        hub: None,
                                    });
                                }
                                parquet_without_feature.get_or_insert(d.clone());
                            }
                            looked.push(format!("{}", d.join("test-*.parquet").display()));
                        }
                    }
                }
            }
        }
        let mut hint = self.how_to_get();
        if let Some(dir) = parquet_without_feature {
            hint = format!(
                "parquet shards were found in {} but this build has no parquet support \
                 (rebuild with `--features parquet`, or convert them to test.jsonl); {hint}",
                dir.display()
            );
        }
        Err(EvalError::DataNotFound {
            name: self.name.to_string(),
            looked: looked.join(", "),
            hint,
        })
    }

    /// Where the Hugging Face hub has this data set in a form [`Dataset::read`] reads:
    /// CNN/DailyMail's parquet shard, and for newstest2014 en-de / en-fr, newstest2016
    /// en-ro and newstest2017 en-de / en-zh the test split of `wmt/wmt14`, `wmt/wmt16`,
    /// `wmt/wmt17` (a `translation` struct column; its text is the hub's, not verified to
    /// equal sacreBLEU's, see [`HubSource::note`]). `None` for wmt19, wmt20 and wmt22,
    /// which have no test split on the hub.
    pub fn hub_source(&self) -> Option<&'static HubSource> {
        match self.layout {
            Layout::Cnndm => Some(&CNNDM_HUB),
            Layout::Wmt { hub, .. } => hub,
        }
    }

    /// [`Dataset::locate`]; when that finds nothing and no `--data` directory was
    /// given, `fallback` (the CLI's Hugging Face cache and download) gets the search,
    /// with the error that names every file tried so far.
    pub fn locate_or(
        &self,
        data_dir: Option<&Path>,
        fallback: Option<&dyn DataFallback>,
    ) -> Result<Located> {
        match (self.locate(data_dir), fallback) {
            (Err(e @ EvalError::DataNotFound { .. }), Some(f)) if data_dir.is_none() => {
                f.locate(self, e)
            }
            (result, _) => result,
        }
    }

    /// How to get this data set's files, as one line.
    pub fn how_to_get(&self) -> String {
        let tail = format!("then pass --data DIR or set {DATA_ENV}=DIR");
        match &self.layout {
            Layout::Wmt {
                dirs,
                text,
                sacrebleu: (testset, pair),
                extra_hint,
                hub,
                ..
            } => {
                let dir = dirs.first().copied().unwrap_or("");
                let (src, reference) = text.first().copied().unwrap_or(("SRC", "REF"));
                let mut s = format!(
                    "get it with `sacrebleu -t {testset} -l {pair} --echo src > DIR/{dir}/{src}` and \
                     `sacrebleu -t {testset} -l {pair} --echo ref > DIR/{dir}/{reference}`"
                );
                if !extra_hint.is_empty() {
                    s.push_str(&format!(" ({extra_hint})"));
                }
                if *testset == "wmt22" {
                    if let Some((src_alt, ref_alt)) = text.get(1) {
                        s.push_str(&format!(
                            " (keep only reference A if several are printed), or copy \
                             txt/sources/{src_alt} and txt/references/{ref_alt} from \
                             github.com/wmt-conference/wmt22-news-systems into DIR/{dir}/"
                        ));
                    }
                }
                match hub {
                    Some(hub) => format!(
                        "{s}; {tail}; without --data, the encdec command line also looks for \
                         {repo} {file} in the Hugging Face cache and downloads it there when \
                         online (not available offline; {note})",
                        repo = hub.repo,
                        file = hub.files.join(" "),
                        note = hub.note,
                    ),
                    None => format!(
                        "{s}; {tail} (no Hugging Face hub copy, offline or online: the hub's \
                         WMT data sets have no {testset} test split)"
                    ),
                }
            }
            Layout::Cnndm => format!(
                "get it with `python -c \"from datasets import load_dataset; \
                 load_dataset('abisee/cnn_dailymail', '3.0.0', split='test').to_json('DIR/cnndm/test.jsonl')\"` \
                 or `huggingface-cli download abisee/cnn_dailymail --repo-type dataset --include '3.0.0/test-*' \
                 --local-dir DIR/cnndm` (parquet, needs the `parquet` feature) or as DIR/cnndm/test.source + \
                 DIR/cnndm/test.target (one article / one summary per line); {tail}; without --data, \
                 the encdec command line also looks for {repo} {file} in the Hugging Face cache and \
                 downloads it there when online (not available offline)",
                repo = CNNDM_HUB.repo,
                file = CNNDM_HUB.files.join(" "),
            ),
        }
    }

    /// Reads the files `located` names (as [`Dataset::locate`] found them) and checks
    /// the example count against the registry. Parquet files of a WMT set are the hub's
    /// (`translation` struct column): the source comes from the field of
    /// [`Dataset::src_lang`], the reference from [`Dataset::tgt_lang`]'s.
    pub fn read(&self, located: &Located) -> Result<Examples> {
        let examples = match (&self.layout, located.format) {
            (Layout::Wmt { .. }, Format::Parquet) => {
                load_parquet_translation(&located.files, self.src_lang, self.tgt_lang)?
            }
            _ => read_located(located)?,
        };
        if examples.len() != self.lines && !self.alt_lines.contains(&examples.len()) {
            let mut expected = self.lines.to_string();
            for alt in self.alt_lines {
                expected.push_str(&format!(" or {alt}"));
            }
            expected.push_str(&format!(" ({})", self.description));
            return Err(EvalError::UnexpectedCount {
                name: self.name.to_string(),
                path: located.files.first().cloned().unwrap_or_default(),
                found: examples.len(),
                expected,
            });
        }
        Ok(examples)
    }
}

/// Reads the files of `located` in their format, without any registry check. Parquet is
/// read as [`load_parquet`] reads it (the column pairs of [`FIELD_PAIRS`]); the WMT hub
/// files need the language pair ([`Dataset::read`], [`load_parquet_translation`]).
pub fn read_located(located: &Located) -> Result<Examples> {
    let file =
        |i: usize| -> Result<&Path> {
            located.files.get(i).map(PathBuf::as_path).ok_or_else(|| {
                EvalError::Invalid(format!("{} needs {} files", located.format, i + 1))
            })
        };
    match located.format {
        Format::WmtText | Format::SourceTarget => load_parallel_text(file(0)?, file(1)?),
        Format::WmtSgml => load_wmt_sgml(file(0)?, file(1)?),
        Format::Jsonl => load_jsonl(file(0)?),
        Format::Parquet => load_parquet(&located.files),
    }
}

fn parquet_shards(dir: &Path, split: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.ends_with(".parquet")
                        && (n.starts_with(&format!("{split}-"))
                            || n.starts_with(&format!("{split}.")))
                })
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------
// Plain text

/// Python's `str.isspace()` (and `\s` in a `str` regex).
fn py_is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\x0b'
            | '\x0c'
            | '\r'
            | '\x1c'..='\x1f'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(EvalError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Splits on `\n` (a final `\n` does not start another line) and checks each line is
/// UTF-8, naming the first bad line (1-based).
fn utf8_lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<&'a str>> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, raw)| {
            std::str::from_utf8(raw).map_err(|_| EvalError::InvalidUtf8 {
                path: path.to_path_buf(),
                line: i + 1,
            })
        })
        .collect()
}

/// Reads a one-example-per-line file: UTF-8, lines end at `\n`, each line loses its
/// trailing whitespace (Python `rstrip()`). Missing, empty and non-UTF-8 files are
/// errors naming the file (and line).
pub fn read_text_lines(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    Ok(utf8_lines(path, &bytes)?
        .into_iter()
        .map(|l| l.trim_end_matches(py_is_space).to_string())
        .collect())
}

/// Loads a source file and a reference file that align line by line (WMT plain text,
/// or CNN/DM `test.source` / `test.target`). Different line counts are an error naming
/// both files and both counts.
pub fn load_parallel_text(src: impl AsRef<Path>, reference: impl AsRef<Path>) -> Result<Examples> {
    let (src, reference) = (src.as_ref(), reference.as_ref());
    let sources = read_text_lines(src)?;
    let references = read_text_lines(reference)?;
    if sources.len() != references.len() {
        return Err(EvalError::SourceRefMismatch {
            src_path: src.to_path_buf(),
            src_count: sources.len(),
            ref_path: reference.to_path_buf(),
            ref_count: references.len(),
        });
    }
    Examples::new(sources, references, None)
}

// ---------------------------------------------------------------------------------
// SGML

/// One `<seg>` of a WMT SGML file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgmlSegment {
    /// `docid` of the enclosing `<doc>`, when there is one.
    pub doc_id: Option<String>,
    /// The `id` attribute of the `<seg>` tag.
    pub seg_id: Option<String>,
    pub text: String,
}

impl SgmlSegment {
    /// `docid:segid` (or whichever of the two exists).
    pub fn full_id(&self) -> Option<String> {
        match (&self.doc_id, &self.seg_id) {
            (Some(d), Some(s)) => Some(format!("{d}:{s}")),
            (Some(d), None) => Some(d.clone()),
            (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        }
    }
}

/// The value of attribute `name` in a tag (`name="value"`, `name='value'` or `name=value`).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(name) {
        let start = from + pos;
        from = start + name.len();
        let boundary = start == 0 || !lower.as_bytes()[start - 1].is_ascii_alphanumeric();
        let rest = tag[from..].trim_start();
        if !boundary || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        return Some(match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or("").to_string(),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or("")
                .to_string(),
        });
    }
    None
}

/// sacreBLEU's `re.sub(r"<seg.*?>(.*)</seg>.*?", r"\1", line)` on a line without its
/// `\n`: the first `<seg`..`>` tag followed (anywhere later) by a `</seg>` is replaced,
/// together with everything up to the LAST `</seg>`, by the text in between; text after
/// that `</seg>` stays. A line with no such match is left as it is.
fn sacrebleu_seg_sub(line: &str) -> String {
    let mut search = 0;
    while let Some(p) = line[search..].find("<seg") {
        let start = search + p;
        let Some(last_close) = line.rfind("</seg>") else {
            break;
        };
        // Lazy `.*?>`: the first '>' after "<seg" that still leaves a "</seg>" after it.
        let after_open = start + 4;
        if let Some(gt) = line[after_open..].find('>').map(|g| after_open + g) {
            if gt < last_close {
                let content = &line[gt + 1..last_close];
                return format!("{}{}{}", &line[..start], content, &line[last_close + 6..]);
            }
        }
        search = start + 1;
    }
    line.to_string()
}

/// sacreBLEU's `_clean`: strip, then collapse each run of whitespace to one space.
fn sacrebleu_clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.trim_matches(py_is_space).chars() {
        if py_is_space(c) {
            pending_space = true;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Parses WMT SGML text the way sacreBLEU converts `.sgm` files to plain text (see the
/// module doc). Entities are left as they are, as sacreBLEU leaves them.
pub fn parse_sgml(text: &str) -> Vec<SgmlSegment> {
    let mut doc_id: Option<String> = None;
    let mut out = Vec::new();
    for line in text.split('\n') {
        let trimmed = line.trim_start();
        let head = trimmed.get(..5).unwrap_or(trimmed).to_ascii_lowercase();
        if head.starts_with("<doc") {
            // `<doc docid="..." ...>` (or a bare `<doc>`).
            doc_id = attribute(trimmed.split('>').next().unwrap_or(""), "docid");
        } else if head.starts_with("</doc") {
            doc_id = None;
        }
        if line.starts_with("<seg ") {
            let seg_id = attribute(line.split('>').next().unwrap_or(""), "id");
            out.push(SgmlSegment {
                doc_id: doc_id.clone(),
                seg_id,
                text: sacrebleu_clean(&sacrebleu_seg_sub(line)),
            });
        }
    }
    out
}

/// Reads and parses a WMT SGML file (see [`parse_sgml`]).
pub fn read_sgml(path: impl AsRef<Path>) -> Result<Vec<SgmlSegment>> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    let lines = utf8_lines(path, &bytes)?;
    let segs = parse_sgml(&lines.join("\n"));
    if segs.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{}: no <seg ...> lines: not a WMT SGML file",
            path.display()
        )));
    }
    Ok(segs)
}

/// Loads a WMT SGML source/reference pair; ids are `docid:segid` from the source file.
pub fn load_wmt_sgml(src: impl AsRef<Path>, reference: impl AsRef<Path>) -> Result<Examples> {
    let (src, reference) = (src.as_ref(), reference.as_ref());
    let s = read_sgml(src)?;
    let r = read_sgml(reference)?;
    if s.len() != r.len() {
        return Err(EvalError::SourceRefMismatch {
            src_path: src.to_path_buf(),
            src_count: s.len(),
            ref_path: reference.to_path_buf(),
            ref_count: r.len(),
        });
    }
    let ids: Option<Vec<String>> = s.iter().map(SgmlSegment::full_id).collect();
    Examples::new(
        s.into_iter().map(|x| x.text).collect(),
        r.into_iter().map(|x| x.text).collect(),
        ids,
    )
}

/// Replaces the character references Python's `html.unescape` knows best: `&amp;`,
/// `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&nbsp;` and numeric `&#NN;` / `&#xHH;`.
/// Anything else is left as it is. Not applied by the loaders (sacreBLEU does not).
pub fn unescape_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let semi = tail.find(';').filter(|&i| i <= 12);
        let decoded = semi.and_then(|i| {
            let name = &tail[1..i];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse::<u32>().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, i + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------
// JSONL and parquet

/// The (source, reference) field names accepted in JSONL objects and parquet rows,
/// tried in this order.
pub const FIELD_PAIRS: &[(&str, &str)] = &[
    ("article", "highlights"),
    ("document", "summary"),
    ("source", "target"),
];

fn id_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Loads a JSONL file: one object per non-blank line with `article`/`highlights`
/// (the Hugging Face CNN/DailyMail fields), `document`/`summary` or `source`/`target`
/// string fields, and optionally `id`. Newlines inside the strings are kept (they
/// separate the highlight sentences, which ROUGE-Lsum uses).
pub fn load_jsonl(path: impl AsRef<Path>) -> Result<Examples> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    let mut sources = Vec::new();
    let mut references = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut all_ids = true;
    for (i, line) in utf8_lines(path, &bytes)?.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}: line {}", path.display(), i + 1);
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| EvalError::Invalid(format!("{}: not valid JSON: {e}", at())))?;
        let obj = value
            .as_object()
            .ok_or_else(|| EvalError::Invalid(format!("{}: expected a JSON object", at())))?;
        let pair = FIELD_PAIRS
            .iter()
            .find(|(s, r)| obj.contains_key(*s) && obj.contains_key(*r))
            .ok_or_else(|| {
                EvalError::Invalid(format!(
                    "{}: expected string fields {}",
                    at(),
                    FIELD_PAIRS
                        .iter()
                        .map(|(s, r)| format!("{s}/{r}"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
            })?;
        let field = |name: &str| -> Result<String> {
            obj.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    EvalError::Invalid(format!("{}: field '{name}' is not a string", at()))
                })
        };
        sources.push(field(pair.0)?);
        references.push(field(pair.1)?);
        match obj.get("id").and_then(id_string) {
            Some(id) => ids.push(id),
            None => all_ids = false,
        }
    }
    if sources.is_empty() {
        return Err(EvalError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Examples::new(sources, references, all_ids.then_some(ids))
}

/// Loads Hugging Face `datasets` parquet shards, in the order given, reading the same
/// field pairs as [`load_jsonl`] (string columns) and `id` when present.
#[cfg(feature = "parquet")]
pub fn load_parquet(files: &[PathBuf]) -> Result<Examples> {
    read_parquet(files, ParquetColumns::Fields)
}

/// Loads the Hugging Face hub's WMT parquet files (`wmt/wmt14`
/// `de-en/test-00000-of-00001.parquet`, ...), in the order given: every row has a
/// struct column `translation` with one string field per language code; the source is
/// field `src_lang`, the reference field `tgt_lang` (for en-de from a `de-en` file:
/// `en`, then `de`). The text is taken as stored, without stripping or unescaping; it
/// is not verified here to equal sacreBLEU's text of the same test set. `id` is read as
/// by [`load_parquet`] when present (the hub's WMT files have none).
#[cfg(feature = "parquet")]
pub fn load_parquet_translation(
    files: &[PathBuf],
    src_lang: &str,
    tgt_lang: &str,
) -> Result<Examples> {
    read_parquet(
        files,
        ParquetColumns::Translation {
            src: src_lang,
            tgt: tgt_lang,
        },
    )
}

/// Where parquet rows keep their source and reference.
#[cfg(feature = "parquet")]
#[derive(Clone, Copy)]
enum ParquetColumns<'a> {
    /// String columns, the first pair of [`FIELD_PAIRS`] a row has.
    Fields,
    /// Fields `src` and `tgt` of the struct column `translation`.
    Translation { src: &'a str, tgt: &'a str },
}

#[cfg(feature = "parquet")]
fn read_parquet(files: &[PathBuf], columns: ParquetColumns) -> Result<Examples> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    use std::collections::HashMap;

    if files.is_empty() {
        return Err(EvalError::Invalid("no parquet shards given".into()));
    }
    let mut sources = Vec::new();
    let mut references = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut all_ids = true;
    for path in files {
        let bad = |e: &dyn fmt::Display| EvalError::Invalid(format!("{}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(|source| EvalError::Io {
            path: path.clone(),
            source,
        })?;
        let reader = SerializedFileReader::new(file).map_err(|e| bad(&e))?;
        let iter = reader.get_row_iter(None).map_err(|e| bad(&e))?;
        for (i, row) in iter.enumerate() {
            let row = row.map_err(|e| bad(&e))?;
            let at = || format!("{}: row {}", path.display(), i + 1);
            let fields: HashMap<&str, &Field> = row
                .get_column_iter()
                .map(|(name, field)| (name.as_str(), field))
                .collect();
            let text = |name: &str| match fields.get(name) {
                Some(Field::Str(s)) => Some(s.clone()),
                _ => None,
            };
            let pair = match columns {
                ParquetColumns::Fields => FIELD_PAIRS
                    .iter()
                    .find_map(|(s, r)| Some((text(s)?, text(r)?)))
                    .ok_or_else(|| {
                        EvalError::Invalid(format!(
                            "{}: no string columns article/highlights, document/summary or source/target",
                            at()
                        ))
                    })?,
                ParquetColumns::Translation { src, tgt } => {
                    let Some(Field::Group(translation)) = fields.get("translation") else {
                        return Err(EvalError::Invalid(format!(
                            "{}: no struct column 'translation' (the hub's WMT files have one, \
                             with a string field per language code)",
                            at()
                        )));
                    };
                    let lang = |code: &str| -> Result<String> {
                        let found = translation
                            .get_column_iter()
                            .find(|(name, _)| name.as_str() == code)
                            .map(|(_, f)| f);
                        match found {
                            Some(Field::Str(s)) => Ok(s.clone()),
                            Some(_) => Err(EvalError::Invalid(format!(
                                "{}: translation.{code} is not a string",
                                at()
                            ))),
                            None => Err(EvalError::Invalid(format!(
                                "{}: translation has no field '{code}' (it has {})",
                                at(),
                                translation
                                    .get_column_iter()
                                    .map(|(name, _)| name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))),
                        }
                    };
                    (lang(src)?, lang(tgt)?)
                }
            };
            sources.push(pair.0);
            references.push(pair.1);
            match fields.get("id") {
                Some(Field::Str(s)) => ids.push(s.clone()),
                Some(Field::Long(n)) => ids.push(n.to_string()),
                Some(Field::Int(n)) => ids.push(n.to_string()),
                _ => all_ids = false,
            }
        }
    }
    Examples::new(sources, references, all_ids.then_some(ids))
}

/// Without the `parquet` feature: an error saying how to get parquet support.
#[cfg(not(feature = "parquet"))]
pub fn load_parquet(files: &[PathBuf]) -> Result<Examples> {
    let first = files
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "parquet shards".into());
    Err(EvalError::Invalid(format!(
        "{first}: this build has no parquet support: rebuild encdec-eval with `--features parquet`, \
         or convert the split to JSONL (datasets' Dataset.to_json)"
    )))
}

/// Without the `parquet` feature: an error saying how to get parquet support.
#[cfg(not(feature = "parquet"))]
pub fn load_parquet_translation(
    files: &[PathBuf],
    _src_lang: &str,
    _tgt_lang: &str,
) -> Result<Examples> {
    load_parquet(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tests/fixtures/datasets/wmt14-de-en-test.parquet (tools/make_wmt_parquet_fixture.py):
    /// a stand-in for `wmt/wmt14` `de-en/test-00000-of-00001.parquet`.
    #[cfg(feature = "parquet")]
    fn wmt14_fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/datasets/wmt14-de-en-test.parquet")
    }

    /// The rows tools/make_wmt_parquet_fixture.py writes.
    #[cfg(feature = "parquet")]
    const SENTENCES: &[&str] = &[
        "the small house",
        "the large house",
        "Every child should learn to read a good book.",
        "the dog ran home",
        "the people of the small town walk along the river.",
        "yes",
        "the water is warm and the light is good.",
    ];
    #[cfg(feature = "parquet")]
    const GERMAN: &[&str] = &[
        "das kleine Haus",
        "das große Haus",
        "der Hund lief nach Hause",
    ];

    #[cfg(feature = "parquet")]
    #[test]
    fn the_translation_struct_is_read_per_language() {
        let files = vec![wmt14_fixture()];
        let ex = load_parquet_translation(&files, "en", "de").unwrap();
        assert_eq!(ex.len(), 3003);
        assert_eq!(ex.ids, None);
        for i in [0, 1, 2, 3, 5, 3002] {
            assert_eq!(ex.sources[i], SENTENCES[i % SENTENCES.len()], "row {i}");
            let de = if i % 2 == 0 {
                SENTENCES[i % SENTENCES.len()]
            } else {
                GERMAN[(i / 2) % GERMAN.len()]
            };
            assert_eq!(ex.references[i], de, "row {i}");
        }
        // The other direction swaps the fields.
        let back = load_parquet_translation(&files, "de", "en").unwrap();
        assert_eq!(back.sources, ex.references);
        assert_eq!(back.references, ex.sources);
    }

    #[cfg(feature = "parquet")]
    #[test]
    fn a_missing_language_or_column_names_the_file_and_row() {
        let files = vec![wmt14_fixture()];
        let msg = load_parquet_translation(&files, "en", "fr")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("wmt14-de-en-test.parquet: row 1"), "{msg}");
        assert!(msg.contains("no field 'fr' (it has de, en)"), "{msg}");
        // Read as CNN/DM-style columns, the file has none of them.
        let msg = load_parquet(&files).unwrap_err().to_string();
        assert!(
            msg.contains("no string columns article/highlights"),
            "{msg}"
        );
    }

    #[cfg(feature = "parquet")]
    #[test]
    fn a_wmt_set_reads_the_hub_file_and_checks_its_count() {
        let located = Located {
            format: Format::Parquet,
            files: vec![wmt14_fixture()],
            hub: Dataset::get("wmt14-en-de").unwrap().hub_source().copied(),
        };
        let ex = Dataset::get("wmt14-en-de").unwrap().read(&located).unwrap();
        assert_eq!(ex.len(), 3003);
        assert_eq!(ex.sources[1], "the large house");
        assert_eq!(ex.references[1], "das kleine Haus");
        // newstest2017 has 3004 segments: the 3003 rows are one clear line.
        let msg = Dataset::get("wmt17-en-de")
            .unwrap()
            .read(&located)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("data set 'wmt17-en-de'")
                && msg.contains("has 3003 examples, expected 3004"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn hub_copies_exist_for_2014_to_2017_only() {
        let with: Vec<(&str, &str, &str)> = Dataset::all()
            .iter()
            .filter_map(|d| {
                let h = d.hub_source()?;
                Some((d.name, h.repo, h.files[0]))
            })
            .collect();
        assert_eq!(
            with,
            vec![
                (
                    "cnndm",
                    "abisee/cnn_dailymail",
                    "3.0.0/test-00000-of-00001.parquet"
                ),
                (
                    "wmt14-en-de",
                    "wmt/wmt14",
                    "de-en/test-00000-of-00001.parquet"
                ),
                (
                    "wmt14-en-fr",
                    "wmt/wmt14",
                    "fr-en/test-00000-of-00001.parquet"
                ),
                (
                    "wmt16-en-ro",
                    "wmt/wmt16",
                    "ro-en/test-00000-of-00001.parquet"
                ),
                (
                    "wmt17-en-de",
                    "wmt/wmt17",
                    "de-en/test-00000-of-00001.parquet"
                ),
                (
                    "wmt17-en-zh",
                    "wmt/wmt17",
                    "zh-en/test-00000-of-00001.parquet"
                ),
            ]
        );
        let wmt14 = Dataset::get("wmt14-en-de").unwrap().how_to_get();
        assert!(
            wmt14.contains("wmt/wmt14 de-en/test-00000-of-00001.parquet in the Hugging Face cache")
                && wmt14.contains("not verified to equal sacreBLEU's"),
            "{wmt14}"
        );
        for name in ["wmt19-en-de", "wmt20-en-zh", "wmt22-en-de"] {
            let how = Dataset::get(name).unwrap().how_to_get();
            assert!(how.contains("no Hugging Face hub copy"), "{name}: {how}");
            assert!(!how.contains("wmt/wmt1"), "{name}: {how}");
        }
    }
}
