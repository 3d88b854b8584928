//! The tokenizers of sacreBLEU 2.x (`13a`, `intl`, `zh`, `char`, `none`), reproduced
//! so that `tokenize(line)` returns the very string sacreBLEU's tokenizer returns.
//!
//! Python's `re.sub` with a two-character pattern scans left to right and resumes
//! after each match; the `sub_pairs` helpers below do the same, which is what makes
//! e.g. `"a.."` tokenize as sacreBLEU does. Whitespace is Python's `str.split()`
//! whitespace, which is Rust's `char::is_whitespace` plus U+001C..U+001F.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::EvalError;

/// A sacreBLEU tokenizer, by its signature name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BleuTokenizer {
    /// mteval-v13a, sacreBLEU's default.
    #[default]
    Tok13a,
    /// mteval-v14 "international": splits on Unicode punctuation and symbols.
    Intl,
    /// Chinese: each CJK character is a token, the rest as 13a.
    Zh,
    /// Every non-whitespace character is a token.
    Char,
    /// Whitespace split only.
    None,
}

impl BleuTokenizer {
    pub const ALL: [BleuTokenizer; 5] = [
        BleuTokenizer::Tok13a,
        BleuTokenizer::Intl,
        BleuTokenizer::Zh,
        BleuTokenizer::Char,
        BleuTokenizer::None,
    ];

    /// The name used on the command line and in the signature (`tok:13a`).
    pub fn name(self) -> &'static str {
        match self {
            BleuTokenizer::Tok13a => "13a",
            BleuTokenizer::Intl => "intl",
            BleuTokenizer::Zh => "zh",
            BleuTokenizer::Char => "char",
            BleuTokenizer::None => "none",
        }
    }

    /// Tokenizes one line exactly as sacreBLEU's tokenizer object does (the caller
    /// applies BLEU's own lowercasing and `rstrip` first, as sacreBLEU does).
    pub fn tokenize(self, line: &str) -> String {
        match self {
            BleuTokenizer::Tok13a | BleuTokenizer::Zh | BleuTokenizer::Intl => {
                normalize_space(&self.spaced(line))
            }
            BleuTokenizer::Char => self.spaced(line),
            BleuTokenizer::None => line.to_string(),
        }
    }

    /// A string whose Python `split()` gives the same tokens as `tokenize(line)`,
    /// without the final whitespace normalization (BLEU splits it anyway).
    pub fn spaced(self, line: &str) -> String {
        match self {
            BleuTokenizer::Tok13a => tokenize_13a(line),
            BleuTokenizer::Intl => tokenize_intl(line),
            BleuTokenizer::Zh => tokenize_zh(line),
            BleuTokenizer::Char => {
                let mut out = String::with_capacity(line.len() * 2);
                for (i, c) in line.chars().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push(c);
                }
                out
            }
            BleuTokenizer::None => line.to_string(),
        }
    }
}

impl fmt::Display for BleuTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BleuTokenizer {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BleuTokenizer::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| EvalError::Unknown {
                what: "tokenizer",
                name: s.to_string(),
                valid: BleuTokenizer::ALL.map(|t| t.name()).join(", "),
            })
    }
}

/// Python's `str.isspace()` (the separators of `str.split()` and `str.strip()`).
#[inline]
pub fn py_is_space(c: char) -> bool {
    match c {
        '\t'..='\r' | '\u{1c}'..='\u{20}' => true,
        c if (c as u32) < 0x80 => false,
        c => c.is_whitespace(),
    }
}

/// ASCII bytes that Python's `str.split()` splits on.
const fn ascii_space_table() -> [bool; 128] {
    let mut t = [false; 128];
    let mut b = 0x09;
    while b <= 0x0d {
        t[b] = true;
        b += 1;
    }
    let mut b = 0x1c;
    while b <= 0x20 {
        t[b] = true;
        b += 1;
    }
    t
}
const ASCII_SPACE: [bool; 128] = ascii_space_table();

/// Python's `s.split()`: non-empty runs between whitespace.
pub fn py_split(s: &str) -> PySplit<'_> {
    PySplit { s, pos: 0 }
}

/// Iterator of `py_split`; ASCII is classified by table, other characters decoded.
pub struct PySplit<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> PySplit<'a> {
    /// Byte length of the whitespace character at `i`, or 0 if there is none.
    #[inline]
    fn space_len(&self, i: usize) -> usize {
        let b = self.s.as_bytes()[i];
        if b < 0x80 {
            return usize::from(ASCII_SPACE[usize::from(b)]);
        }
        match self.s[i..].chars().next() {
            Some(c) if c.is_whitespace() => c.len_utf8(),
            _ => 0,
        }
    }
}

impl<'a> Iterator for PySplit<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let n = self.s.len();
        let bytes = self.s.as_bytes();
        // Skip whitespace.
        loop {
            if self.pos >= n {
                return None;
            }
            let l = self.space_len(self.pos);
            if l == 0 {
                break;
            }
            self.pos += l;
        }
        let start = self.pos;
        while self.pos < n {
            let b = bytes[self.pos];
            if b < 0x80 {
                if ASCII_SPACE[usize::from(b)] {
                    break;
                }
                self.pos += 1;
            } else if self.space_len(self.pos) > 0 {
                break;
            } else {
                // Step over the whole (non-space) character.
                self.pos += 1;
                while self.pos < n && (bytes[self.pos] & 0xc0) == 0x80 {
                    self.pos += 1;
                }
            }
        }
        Some(&self.s[start..self.pos])
    }
}

/// Python's `s.rstrip()`.
#[inline]
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_is_space)
}

/// Python's `' '.join(s.split())`.
fn normalize_space(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for tok in py_split(s) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(tok);
    }
    out
}

fn tokenize_13a(line: &str) -> String {
    // mteval-v13a's language-independent part, in sacreBLEU's order (rarely needed).
    if !(line.contains('&') || line.contains('\n') || line.contains("<skipped>")) {
        return regexp_post(line, true);
    }
    let mut s = line.replace("<skipped>", "");
    if s.contains('\n') {
        s = s.replace("-\n", "").replace('\n', " ");
    }
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    regexp_post(&s, true)
}

/// ASCII characters that 13a surrounds with spaces: `[\{-\~\[-\` -\&\(-\+\:-\@\/]`.
const fn split_13a_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] =
            matches!(c, b'{'..=b'~' | b'['..=b'`' | b' '..=b'&' | b'('..=b'+' | b':'..=b'@' | b'/');
        b += 1;
    }
    t
}
const SPLIT_13A: [bool; 256] = split_13a_table();

/// Which side of a two-byte pattern is the (ASCII) anchor searched for.
#[derive(Clone, Copy, PartialEq)]
enum Anchor {
    First,
    Second,
}

/// Emulates `re.sub` of a two-character pattern `(A)(B)` over `src`: leftmost
/// non-overlapping matches, scanning resumes after each match; `emit` writes the
/// replacement. One side of every pattern here is a small set of ASCII bytes (the
/// anchor), so only anchor positions are tested and the runs between are copied.
/// Working on bytes is exact: a match can never split a multi-byte character, as
/// the anchor is ASCII and the other side's test only looks at ASCII digits.
#[inline]
fn sub_pairs(
    src: &[u8],
    out: &mut Vec<u8>,
    anchor: Anchor,
    is_anchor: impl Fn(u8) -> bool,
    is_match: impl Fn(u8, u8) -> bool,
    emit: impl Fn(&mut Vec<u8>, u8, u8),
) {
    out.clear();
    let n = src.len();
    let second = anchor == Anchor::Second;
    let mut copied = 0;
    // Search position for the next anchor: pairs start at or after `copied`.
    let mut j = usize::from(second);
    while j < n {
        let Some(off) = src[j..].iter().position(|&b| is_anchor(b)) else {
            break;
        };
        let a = j + off;
        let p = if second { a - 1 } else { a };
        if p + 1 < n && is_match(src[p], src[p + 1]) {
            out.extend_from_slice(&src[copied..p]);
            emit(out, src[p], src[p + 1]);
            copied = p + 2;
            j = copied + usize::from(second);
        } else {
            j = a + 1;
        }
    }
    out.extend_from_slice(&src[copied..]);
}

/// sacreBLEU's `TokenizerRegexp` (the common tail of `13a` and `zh`), without its
/// final `' '.join(line.split())`. `pad` is 13a's `f' {line} '`.
fn regexp_post(s: &str, pad: bool) -> String {
    let src = s.as_bytes();
    let mut a = Vec::with_capacity(src.len() * 2 + 8);
    // The padding spaces are themselves in the first rule's class.
    const PADDED_SPACE: [u8; 3] = [b' ', b' ', b' '];
    if pad {
        a.extend_from_slice(&PADDED_SPACE);
    }
    let mut start = 0;
    for (k, &b) in src.iter().enumerate() {
        if SPLIT_13A[usize::from(b)] {
            a.extend_from_slice(&src[start..k]);
            a.extend_from_slice(&[b' ', b, b' ']);
            start = k + 1;
        }
    }
    a.extend_from_slice(&src[start..]);
    if pad {
        a.extend_from_slice(&PADDED_SPACE);
    }
    let mut b = Vec::with_capacity(a.len() + 16);
    let is_pc = |c: u8| c == b'.' || c == b',';
    // Period and comma unless preceded by a digit.
    sub_pairs(
        &a,
        &mut b,
        Anchor::Second,
        is_pc,
        |x, _| !x.is_ascii_digit(),
        |o, x, y| o.extend_from_slice(&[x, b' ', y, b' ']),
    );
    // Period and comma unless followed by a digit.
    sub_pairs(
        &b,
        &mut a,
        Anchor::First,
        is_pc,
        |_, y| !y.is_ascii_digit(),
        |o, x, y| o.extend_from_slice(&[b' ', x, b' ', y]),
    );
    // Dash preceded by a digit.
    sub_pairs(
        &a,
        &mut b,
        Anchor::Second,
        |c| c == b'-',
        |x, _| x.is_ascii_digit(),
        |o, x, y| o.extend_from_slice(&[x, b' ', y, b' ']),
    );
    // Only ASCII bytes were inserted at character boundaries, so this cannot fail;
    // the lossy fallback keeps us panic-free regardless.
    match String::from_utf8(b) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The code point ranges sacreBLEU's `zh` tokenizer treats as Chinese characters.
/// sacreBLEU writes some ranges as five-hex-digit `\u` escapes, which Python reads
/// as a two-character string; compared as strings, `'\u20000' <= c <= '\u2a6d6'`
/// holds for U+2001..=U+2A6D. The ranges below are that effective set, merged.
const ZH_RANGES: [(u32, u32); 13] = [
    (0x2001, 0x2a6d),
    (0x2e80, 0x2fdf),
    (0x2ff0, 0x303f),
    (0x3100, 0x312f),
    (0x31a0, 0x31ef),
    (0x3200, 0x4db5),
    (0x4e00, 0x9fbb),
    (0xf900, 0xfa2d),
    (0xfa30, 0xfa6a),
    (0xfa70, 0xfad9),
    (0xfe10, 0xfe1f),
    (0xfe30, 0xfe4f),
    (0xff00, 0xffef),
];

/// Whether sacreBLEU's `zh` tokenizer isolates `c` as a token of its own.
#[inline]
pub fn is_zh_char(c: char) -> bool {
    let c = c as u32;
    if !(0x2001..=0xffef).contains(&c) {
        return false;
    }
    ZH_RANGES.iter().any(|&(a, b)| a <= c && c <= b)
}

fn tokenize_zh(line: &str) -> String {
    let line = line.trim_matches(py_is_space);
    let mut spaced = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_zh_char(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    regexp_post(&spaced, false)
}

/// Unicode general-category classes used by `intl`, as sorted code point ranges.
struct Classes {
    number: Vec<(u32, u32)>,
    punct: Vec<(u32, u32)>,
    symbol: Vec<(u32, u32)>,
}

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    // regex-syntax carries the Unicode tables; a parse failure here would be a bug
    // in a constant pattern, so an empty class (no splitting) is a safe fallback.
    let hir = match regex_syntax::Parser::new().parse(pattern) {
        Ok(h) => h,
        Err(_) => return Vec::new(),
    };
    match hir.kind() {
        regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(cls)) => cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => Vec::new(),
    }
}

/// Code points that Unicode 17 assigned to N, P and S. sacreBLEU's `regex` module
/// (2026.x) knows them; regex-syntax 0.8 carries Unicode 16 tables.
const UNICODE17_N: [(u32, u32); 2] = [(0x11de0, 0x11de9), (0x16ff4, 0x16ff6)];
const UNICODE17_P: [(u32, u32); 1] = [(0x10ed0, 0x10ed0)];
const UNICODE17_S: [(u32, u32); 20] = [
    (0x20c1, 0x20c1),
    (0x2b96, 0x2b96),
    (0xfbc3, 0xfbd2),
    (0xfd90, 0xfd91),
    (0xfdc8, 0xfdce),
    (0x10ed1, 0x10ed8),
    (0x1ccfa, 0x1ccfc),
    (0x1ceba, 0x1ced0),
    (0x1cee0, 0x1cef0),
    (0x1f6d8, 0x1f6d8),
    (0x1f777, 0x1f77a),
    (0x1f8d0, 0x1f8d8),
    (0x1fa54, 0x1fa57),
    (0x1fa8a, 0x1fa8a),
    (0x1fa8e, 0x1fa8e),
    (0x1fac8, 0x1fac8),
    (0x1facd, 0x1facd),
    (0x1faea, 0x1faea),
    (0x1faef, 0x1faef),
    (0x1fbfa, 0x1fbfa),
];

/// Union of sorted ranges (idempotent once regex-syntax learns Unicode 17).
fn with_extra(mut ranges: Vec<(u32, u32)>, extra: &[(u32, u32)]) -> Vec<(u32, u32)> {
    ranges.extend_from_slice(extra);
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn classes() -> &'static Classes {
    static CLASSES: OnceLock<Classes> = OnceLock::new();
    CLASSES.get_or_init(|| Classes {
        number: with_extra(class_ranges(r"\p{N}"), &UNICODE17_N),
        punct: with_extra(class_ranges(r"\p{P}"), &UNICODE17_P),
        symbol: with_extra(class_ranges(r"\p{S}"), &UNICODE17_S),
    })
}

#[inline]
fn in_ranges(ranges: &[(u32, u32)], c: u32) -> bool {
    ranges
        .binary_search_by(|&(a, b)| {
            if b < c {
                std::cmp::Ordering::Less
            } else if a > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

const CAT_N: u8 = 1;
const CAT_P: u8 = 2;
const CAT_S: u8 = 4;

/// Category bits (N, P, S) of one character.
#[inline]
fn category(cls: &Classes, c: char) -> u8 {
    if c.is_ascii() {
        return match c {
            '0'..='9' => CAT_N,
            '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~' => CAT_S,
            '!'..='/' | ':'..='@' | '['..='_' | '{' | '}' => CAT_P,
            _ => 0,
        };
    }
    let c = c as u32;
    let mut cat = 0;
    if in_ranges(&cls.number, c) {
        cat |= CAT_N;
    }
    if in_ranges(&cls.punct, c) {
        cat |= CAT_P;
    }
    if in_ranges(&cls.symbol, c) {
        cat |= CAT_S;
    }
    cat
}

/// `re.sub` of `(A)(B)` over (char, category) pairs; see `sub_pairs`.
fn sub_char_pairs(
    src: &[(char, u8)],
    out: &mut Vec<(char, u8)>,
    is_match: impl Fn(u8, u8) -> bool,
    before: bool,
) {
    const SP: (char, u8) = (' ', 0);
    out.clear();
    let n = src.len();
    let mut i = 0;
    while i < n {
        if i + 1 < n && is_match(src[i].1, src[i + 1].1) {
            if before {
                // `\1 \2 `
                out.extend_from_slice(&[src[i], SP, src[i + 1], SP]);
            } else {
                // ` \1 \2`
                out.extend_from_slice(&[SP, src[i], SP, src[i + 1]]);
            }
            i += 2;
        } else {
            out.push(src[i]);
            i += 1;
        }
    }
}

fn tokenize_intl(line: &str) -> String {
    let cls = classes();
    let src: Vec<(char, u8)> = line.chars().map(|c| (c, category(cls, c))).collect();
    let mut a = Vec::with_capacity(src.len() * 2);
    // Punctuation preceded by a non-digit.
    sub_char_pairs(&src, &mut a, |x, y| x & CAT_N == 0 && y & CAT_P != 0, true);
    // Punctuation followed by a non-digit.
    let mut b = Vec::with_capacity(a.len() + 16);
    sub_char_pairs(&a, &mut b, |x, y| x & CAT_P != 0 && y & CAT_N == 0, false);
    // Symbols.
    let mut s = String::with_capacity(b.len() * 2);
    for &(c, cat) in &b {
        if cat & CAT_S != 0 {
            s.push(' ');
            s.push(c);
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tok13a_basics() {
        let t = BleuTokenizer::Tok13a;
        assert_eq!(t.tokenize("Hello, world."), "Hello , world .");
        assert_eq!(t.tokenize("It costs $3,000.50."), "It costs $ 3,000.50 .");
        assert_eq!(t.tokenize("a..b"), "a . . b");
        assert_eq!(t.tokenize("1995-2000"), "1995 - 2000");
        assert_eq!(t.tokenize("&quot;x&quot; &amp;lt;"), "\" x \" <");
        assert_eq!(t.tokenize("a <skipped> b"), "a b");
        assert_eq!(t.tokenize("don't"), "don't");
        assert_eq!(t.tokenize(""), "");
    }

    #[test]
    fn zh_quirky_ranges() {
        assert!(is_zh_char('\u{2014}'));
        assert!(!is_zh_char('\u{2000}'));
        assert!(is_zh_char('\u{2a6d}'));
        assert!(!is_zh_char('\u{2a6e}'));
        assert!(!is_zh_char('\u{20000}'));
        assert!(is_zh_char('中'));
        assert_eq!(BleuTokenizer::Zh.tokenize("我爱 NLP."), "我 爱 NLP .");
    }

    #[test]
    fn intl_basics() {
        let t = BleuTokenizer::Intl;
        assert_eq!(
            t.tokenize("Hello, world. 3.14 €5"),
            "Hello , world . 3.14 € 5"
        );
        assert_eq!(t.tokenize("«Bonjour»"), "« Bonjour »");
    }

    #[test]
    fn ascii_fast_path_matches_tables() {
        let cls = classes();
        for c in 0u8..128 {
            let cu = u32::from(c);
            let mut slow = 0;
            if in_ranges(&cls.number, cu) {
                slow |= CAT_N;
            }
            if in_ranges(&cls.punct, cu) {
                slow |= CAT_P;
            }
            if in_ranges(&cls.symbol, cu) {
                slow |= CAT_S;
            }
            assert_eq!(category(cls, c as char), slow, "{:?}", c as char);
        }
        assert_eq!(category(cls, '\u{20c1}'), CAT_S);
        assert_eq!(category(cls, '€'), CAT_S);
        assert_eq!(category(cls, '«'), CAT_P);
        assert_eq!(category(cls, '٣'), CAT_N);
    }

    #[test]
    fn parse_names() {
        assert_eq!("zh".parse::<BleuTokenizer>().ok(), Some(BleuTokenizer::Zh));
        let err = "foo".parse::<BleuTokenizer>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown tokenizer 'foo' (valid: 13a, intl, zh, char, none)")
        );
    }
}
