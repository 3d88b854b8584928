//! Reading hypothesis / reference files.
//!
//! Plain files follow the sacreBLEU command line: the file is UTF-8, lines end at
//! `\n` only (a lone `\r` inside a line stays), and each line loses its trailing
//! whitespace (Python's `str.rstrip()`, so a `\r\n` ending is handled too). A final
//! `\n` does not start an extra empty line. `.jsonl` files hold one JSON string per
//! line, which may itself contain newlines (sentence breaks for ROUGE-Lsum).

use std::path::{Path, PathBuf};

use crate::bleu_tokenize::py_rstrip;
use crate::error::{EvalError, Result};

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

/// Splits on `\n`, dropping the empty piece after a final newline; validates each
/// line as UTF-8 and reports the 1-based number of the first bad one.
fn split_lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<&'a str>> {
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

/// Reads a text file as sacreBLEU's command line does (see the module doc).
/// Errors: missing/unreadable file (`Io`), zero-byte file (`EmptyFile`),
/// a line that is not UTF-8 (`InvalidUtf8` with its 1-based number).
pub fn read_lines(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    Ok(split_lines(path, &bytes)?
        .into_iter()
        .map(|l| py_rstrip(l).to_string())
        .collect())
}

fn is_jsonl(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
}

/// Reads one example per entry: for `.jsonl` files each non-blank line must be a
/// JSON string (newlines inside it are kept); other files go through `read_lines`.
pub fn read_examples(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    if !is_jsonl(path) {
        return read_lines(path);
    }
    let bytes = read_bytes(path)?;
    let mut out = Vec::new();
    for (i, line) in split_lines(path, &bytes)?.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            EvalError::Invalid(format!(
                "{}: line {}: not valid JSON: {e}",
                path.display(),
                i + 1
            ))
        })?;
        match value {
            serde_json::Value::String(s) => out.push(s),
            other => {
                return Err(EvalError::Invalid(format!(
                    "{}: line {}: expected a JSON string, found {}",
                    path.display(),
                    i + 1,
                    json_kind(&other)
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(EvalError::EmptyFile {
            path: PathBuf::from(path),
        });
    }
    Ok(out)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, content: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("encdec-eval-io-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join(name);
        let _ = std::fs::write(&p, content);
        p
    }

    #[test]
    fn lines_like_sacrebleu_cli() {
        let p = tmp("a.txt", b"one  \r\ntwo\rx\n\nthree");
        let lines = read_lines(&p).ok();
        assert_eq!(
            lines,
            Some(vec![
                "one".to_string(),
                "two\rx".to_string(),
                String::new(),
                "three".to_string()
            ])
        );
        let p = tmp("b.txt", b"x\n");
        assert_eq!(read_lines(&p).ok(), Some(vec!["x".to_string()]));
        let p = tmp("c.txt", b"\n");
        assert_eq!(read_lines(&p).ok(), Some(vec![String::new()]));
    }

    #[test]
    fn errors_name_the_problem() {
        let p = tmp("empty.txt", b"");
        assert!(matches!(read_lines(&p), Err(EvalError::EmptyFile { .. })));
        let p = tmp("bad.txt", b"ok\nok\n\xff\xfe\n");
        assert!(matches!(
            read_lines(&p),
            Err(EvalError::InvalidUtf8 { line: 3, .. })
        ));
        let missing = std::env::temp_dir().join("encdec-eval-no-such-file.txt");
        match read_lines(&missing) {
            Err(e @ EvalError::Io { .. }) => {
                assert!(e.to_string().contains("encdec-eval-no-such-file.txt"))
            }
            other => panic!("expected Io error, got {other:?}"),
        }
    }

    #[test]
    fn jsonl_strings() {
        let p = tmp("x.jsonl", b"\"a\\nb\"\n\"c\"\n");
        assert_eq!(
            read_examples(&p).ok(),
            Some(vec!["a\nb".to_string(), "c".to_string()])
        );
        let p = tmp("y.jsonl", b"\"a\"\n{\"x\":1}\n");
        let err = read_examples(&p).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("line 2") && e.contains("an object")));
    }
}
