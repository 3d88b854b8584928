//! `nltk.sent_tokenize(text)` (English) in pure Rust: NLTK's Punkt sentence
//! tokenizer (`nltk/tokenize/punkt.py`, `PunktSentenceTokenizer.span_tokenize` with
//! `realign_boundaries=True`) with the pretrained English `punkt_tab` parameters
//! embedded from `punkt_english/` (abbreviations, collocations, frequent sentence
//! starters, orthographic contexts).
//!
//! The `transformers` summarization examples run `"\n".join(nltk.sent_tokenize(x))`
//! on predictions and references before rougeLsum; [`split_for_rouge`] does that.
//!
//! Only the decision procedure is here (no training). Regular expressions of NLTK
//! (compiled there with the `regex` module, Unicode classes) are hand-written scanners
//! here; `\s` is Unicode White_Space, `\w`/`\d` come from the `regex` crate, which
//! uses the same Unicode definitions as Python's `regex` module. Python string methods
//! keep their own definitions: `str.isspace` (White_Space plus U+001C..U+001F) for
//! `strip`/`rstrip`, ASCII `string.whitespace` where NLTK uses it.
//!
//! All offsets are byte offsets into the text (NLTK's are code points; the two agree
//! on what they select).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use regex::Regex;

const ABBREV_TYPES: &str = include_str!("punkt_english/abbrev_types.txt");
const COLLOCATIONS: &str = include_str!("punkt_english/collocations.tab");
const SENT_STARTERS: &str = include_str!("punkt_english/sent_starters.txt");
const ORTHO_CONTEXT: &str = include_str!("punkt_english/ortho_context.tab");

// Orthographic context flags (punkt.py `_ORTHO_*`).
const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC | ORTHO_MID_UC | ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC | ORTHO_MID_LC | ORTHO_UNK_LC;

const NUMBER_TYPE: &str = "##number##";

/// Punkt parameters of one language model.
pub struct PunktModel {
    abbrev_types: HashSet<String>,
    collocations: HashSet<(String, String)>,
    sent_starters: HashSet<String>,
    ortho_context: HashMap<String, u32>,
    re_numeric: Regex,
    re_initial: Regex,
}

/// Lines of a punkt_tab file as NLTK's `TabDecoder` reads them: split on `\n` only
/// (a `\r` stays part of the line), no empty line after a final newline.
fn tab_lines(text: &str) -> impl Iterator<Item = &str> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n').filter(move |_| !text.is_empty())
}

impl PunktModel {
    /// The English model NLTK's `sent_tokenize` uses by default.
    pub fn english() -> &'static PunktModel {
        static MODEL: OnceLock<PunktModel> = OnceLock::new();
        MODEL.get_or_init(|| {
            PunktModel::from_tabs(ABBREV_TYPES, COLLOCATIONS, SENT_STARTERS, ORTHO_CONTEXT)
        })
    }

    /// Builds a model from the four `punkt_tab` files (contents, not paths).
    /// Malformed lines (no tab, non-integer context) are skipped.
    pub fn from_tabs(abbrev: &str, colloc: &str, starters: &str, ortho: &str) -> PunktModel {
        let abbrev_types = tab_lines(abbrev).map(str::to_string).collect();
        let collocations = tab_lines(colloc)
            .filter_map(|l| l.split_once('\t'))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let sent_starters = tab_lines(starters).map(str::to_string).collect();
        let ortho_context = tab_lines(ortho)
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(a, b)| Some((a.to_string(), b.parse().ok()?)))
            .collect();
        PunktModel {
            abbrev_types,
            collocations,
            sent_starters,
            ortho_context,
            // PunktToken._RE_NUMERIC and _RE_INITIAL; `$` never meets a newline here
            // because tokens come from single lines. These literals always compile.
            re_numeric: Regex::new(r"^-?[.,]?\d[\d,.\-]*\.?$").expect("valid regex"),
            re_initial: Regex::new(r"^[^\W\d]\.$").expect("valid regex"),
        }
    }

    /// Sentence spans (byte ranges) of `text`, as `span_tokenize(text)` returns them.
    pub fn span_tokenize(&self, text: &str) -> Vec<(usize, usize)> {
        let slices = self.slices_from_text(text);
        realign_boundaries(text, &slices)
    }

    /// Sentences of `text`, as `nltk.sent_tokenize(text)` returns them.
    pub fn sent_tokenize<'a>(&self, text: &'a str) -> Vec<&'a str> {
        self.span_tokenize(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    fn slices_from_text(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut last_break = 0;
        for (m, context) in match_potential_end_contexts(text) {
            if self.text_contains_sentbreak(&context) {
                out.push((last_break, m.end));
                last_break = m.next_tok.unwrap_or(m.end);
            }
        }
        // The last sentence should not contain trailing whitespace.
        out.push((last_break, text.trim_end_matches(py_isspace).len()));
        out
    }

    /// True when a token of `context` other than the last is a sentence break.
    fn text_contains_sentbreak(&self, context: &str) -> bool {
        let mut tokens: Vec<Token> = tokenize_words(context)
            .into_iter()
            .map(|t| self.first_pass(t))
            .collect();
        let n = tokens.len();
        for i in 0..n.saturating_sub(1) {
            // Token i+1 still carries only its first-pass annotation, as in NLTK's
            // lazy pipeline.
            let (head, tail) = tokens.split_at_mut(i + 1);
            self.second_pass(&mut head[i], &tail[0]);
            if head[i].sentbreak {
                return true;
            }
        }
        false
    }

    fn first_pass<'a>(&self, tok: &'a str) -> Token<'a> {
        let lower = tok.to_lowercase();
        let typ = if self.re_numeric.is_match(&lower) {
            NUMBER_TYPE.to_string()
        } else {
            lower
        };
        let mut chars = tok.chars();
        let first = chars.next().unwrap_or(' ');
        let mut t = Token {
            tok,
            typ,
            period_final: tok.ends_with('.'),
            sentbreak: false,
            abbr: false,
            ellipsis: false,
            first_upper: first.is_uppercase(),
            first_lower: first.is_lowercase(),
        };
        if tok == "." || tok == "?" || tok == "!" {
            t.sentbreak = true;
        } else if tok.len() >= 2 && tok.bytes().all(|b| b == b'.') {
            t.ellipsis = true;
        } else if t.period_final && !tok.ends_with("..") {
            let base = tok[..tok.len() - 1].to_lowercase();
            let last_part = base.rsplit('-').next().unwrap_or("");
            if self.abbrev_types.contains(&base) || self.abbrev_types.contains(last_part) {
                t.abbr = true;
            } else {
                t.sentbreak = true;
            }
        }
        t
    }

    fn is_initial(&self, tok: &str) -> bool {
        self.re_initial.is_match(tok)
    }

    fn ortho(&self, typ: &str) -> u32 {
        self.ortho_context.get(typ).copied().unwrap_or(0)
    }

    /// `_second_pass_annotation(aug_tok1, aug_tok2)`: may change `t1` only.
    fn second_pass(&self, t1: &mut Token, t2: &Token) {
        if !t1.period_final {
            return;
        }
        let typ = t1.type_no_period();
        let next_typ = t2.type_no_sentperiod();
        let tok_is_initial = self.is_initial(t1.tok);

        if self
            .collocations
            .contains(&(typ.to_string(), next_typ.to_string()))
        {
            t1.sentbreak = false;
            t1.abbr = true;
            return;
        }
        if (t1.abbr || t1.ellipsis) && !tok_is_initial {
            if self.ortho_heuristic(t2) == Ortho::True {
                t1.sentbreak = true;
                return;
            }
            if t2.first_upper && self.sent_starters.contains(next_typ) {
                t1.sentbreak = true;
                return;
            }
        }
        if tok_is_initial || typ == NUMBER_TYPE {
            let is_sent_starter = self.ortho_heuristic(t2);
            if is_sent_starter == Ortho::False {
                t1.sentbreak = false;
                t1.abbr = true;
                return;
            }
            if is_sent_starter == Ortho::Unknown
                && tok_is_initial
                && t2.first_upper
                && self.ortho(next_typ) & ORTHO_LC == 0
            {
                t1.sentbreak = false;
                t1.abbr = true;
            }
        }
    }

    /// `_ortho_heuristic`: does `t` start a sentence?
    fn ortho_heuristic(&self, t: &Token) -> Ortho {
        if matches!(t.tok, ";" | ":" | "," | "." | "!" | "?") {
            return Ortho::False;
        }
        let ctx = self.ortho(t.type_no_sentperiod());
        if t.first_upper && ctx & ORTHO_LC != 0 && ctx & ORTHO_MID_UC == 0 {
            return Ortho::True;
        }
        if t.first_lower && (ctx & ORTHO_UC != 0 || ctx & ORTHO_BEG_LC == 0) {
            return Ortho::False;
        }
        Ortho::Unknown
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Ortho {
    True,
    False,
    Unknown,
}

struct Token<'a> {
    tok: &'a str,
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
    first_upper: bool,
    first_lower: bool,
}

impl Token<'_> {
    fn type_no_period(&self) -> &str {
        if self.typ.chars().nth(1).is_some() && self.typ.ends_with('.') {
            &self.typ[..self.typ.len() - 1]
        } else {
            &self.typ
        }
    }

    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }
}

/// Python's `str.isspace` (used by `strip`, `rstrip`, `split()`).
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `\s` of Python's `regex` module: Unicode White_Space.
fn rx_space(c: char) -> bool {
    c.is_whitespace()
}

/// `_re_non_word_chars`: characters that cannot appear within words.
fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// `_re_word_start`: characters that may start a word token.
fn is_word_start(c: char) -> bool {
    !matches!(
        c,
        '(' | '"'
            | '`'
            | '{'
            | '['
            | ':'
            | ';'
            | '&'
            | '#'
            | '*'
            | '@'
            | ')'
            | '}'
            | ']'
            | '-'
            | ','
    )
}

/// A candidate sentence end found by `period_context_re`.
struct EndMatch {
    start: usize,
    end: usize,
    /// Start of the `next_tok` group, when the boundary is followed by whitespace.
    next_tok: Option<usize>,
    /// End of the `after_tok` group.
    after_end: usize,
}

/// `period_context_re().finditer(text)`: `[.?!]` followed by a non-word character, or
/// by whitespace and a non-whitespace token.
fn period_context_matches(text: &str) -> Vec<EndMatch> {
    let mut out = Vec::new();
    for (i, c) in text.char_indices() {
        if !matches!(c, '.' | '?' | '!') {
            continue;
        }
        let end = i + 1;
        let rest = &text[end..];
        let mut it = rest.char_indices();
        let Some((_, next)) = it.next() else {
            continue;
        };
        if is_non_word(next) {
            out.push(EndMatch {
                start: i,
                end,
                next_tok: None,
                after_end: end + next.len_utf8(),
            });
            continue;
        }
        if !rx_space(next) {
            continue;
        }
        // \s+ then \S+ (both greedy).
        let Some(tok_start) = rest.find(|c: char| !rx_space(c)) else {
            continue;
        };
        let tok_len = rest[tok_start..]
            .find(rx_space)
            .unwrap_or(rest.len() - tok_start);
        out.push(EndMatch {
            start: i,
            end,
            next_tok: Some(end + tok_start),
            after_end: end + tok_start + tok_len,
        });
    }
    out
}

/// `_match_potential_end_contexts`: each candidate with its context (the word before,
/// the punctuation and what follows), skipping candidates whose word overlaps the next.
fn match_potential_end_contexts(text: &str) -> Vec<(EndMatch, String)> {
    let mut out = Vec::new();
    let mut previous_slice = (0usize, 0usize);
    let mut previous_match: Option<EndMatch> = None;
    let context = |slice: (usize, usize), m: &EndMatch| {
        let mut s = String::with_capacity(slice.1 - slice.0 + m.after_end - m.start);
        s.push_str(&text[slice.0..slice.1]);
        s.push_str(&text[m.start..m.after_end]);
        s
    };
    for m in period_context_matches(text) {
        let before = &text[previous_slice.1..m.start];
        // `_get_last_whitespace_index`: ASCII `string.whitespace`, 0 when none.
        let idx = before
            .rfind([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
            .unwrap_or(0);
        let word_start = if idx != 0 {
            idx + previous_slice.1 + 1
        } else {
            previous_slice.0
        };
        let prev_word_slice = (word_start, m.start);
        if let Some(pm) = previous_match.take() {
            if previous_slice.1 <= prev_word_slice.0 {
                let ctx = context(previous_slice, &pm);
                out.push((pm, ctx));
            }
        }
        previous_match = Some(m);
        previous_slice = prev_word_slice;
    }
    if let Some(pm) = previous_match {
        let ctx = context(previous_slice, &pm);
        out.push((pm, ctx));
    }
    out
}

/// `_re_multi_char_punct` matched at char index `i`: `-{2,}`, `\.{2,}` or
/// `(?:\.\s){2,}\.`; returns the end char index.
fn multi_char_at(chars: &[char], i: usize) -> Option<usize> {
    let at = |k: usize| chars.get(k).copied();
    if at(i) == Some('-') && at(i + 1) == Some('-') {
        let mut j = i;
        while at(j) == Some('-') {
            j += 1;
        }
        return Some(j);
    }
    if at(i) == Some('.') && at(i + 1) == Some('.') {
        let mut j = i;
        while at(j) == Some('.') {
            j += 1;
        }
        return Some(j);
    }
    // Greedy pairs of ". ", backing off until a final "." follows.
    let mut k = 0;
    while at(i + 2 * k) == Some('.') && at(i + 2 * k + 1).is_some_and(rx_space) {
        k += 1;
    }
    while k >= 2 {
        if at(i + 2 * k) == Some('.') {
            return Some(i + 2 * k + 1);
        }
        k -= 1;
    }
    None
}

/// The lookahead that ends a word token at char index `j`.
fn word_end_at(chars: &[char], j: usize) -> bool {
    let n = chars.len();
    if j >= n || rx_space(chars[j]) || is_non_word(chars[j]) || multi_char_at(chars, j).is_some() {
        return true;
    }
    chars[j] == ','
        && (j + 1 >= n
            || rx_space(chars[j + 1])
            || is_non_word(chars[j + 1])
            || multi_char_at(chars, j + 1).is_some())
}

/// `PunktLanguageVars.word_tokenize` on one line (`_word_tokenizer_re().findall`).
fn word_tokenize_line(line: &str) -> Vec<&str> {
    let chars: Vec<char> = line.chars().collect();
    // Byte offset of each char index (and of the end).
    let mut offs: Vec<usize> = line.char_indices().map(|(o, _)| o).collect();
    offs.push(line.len());
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let j = if let Some(j) = multi_char_at(&chars, i) {
            j
        } else if rx_space(chars[i]) {
            i += 1;
            continue;
        } else if is_word_start(chars[i]) {
            // \S+? up to the first position where a word may end.
            let mut j = i + 1;
            while !word_end_at(&chars, j) {
                j += 1;
            }
            j
        } else {
            i + 1
        };
        out.push(&line[offs[i]..offs[j]]);
        i = j;
    }
    out
}

/// `_tokenize_words`: tokens of every non-blank line.
fn tokenize_words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        if line.chars().all(py_isspace) {
            continue;
        }
        out.extend(word_tokenize_line(line));
    }
    out
}

/// `re_boundary_realignment` matched at the start of `s`:
/// `["')\]}‘’“”«»]+?(?:\s+|(?=--)|$)`. Returns (length of the closing punctuation,
/// length of the whole match), in bytes.
fn boundary_realignment(s: &str) -> Option<(usize, usize)> {
    let is_closer = |c: char| {
        matches!(
            c,
            '"' | '\''
                | ')'
                | ']'
                | '}'
                | '\u{2018}'
                | '\u{2019}'
                | '\u{201c}'
                | '\u{201d}'
                | '\u{ab}'
                | '\u{bb}'
        )
    };
    let mut pos = 0;
    let mut it = s.chars();
    loop {
        let c = it.next()?;
        if !is_closer(c) {
            return None;
        }
        pos += c.len_utf8();
        let rest = &s[pos..];
        match rest.chars().next() {
            // `$` (MULTILINE): end of the string; a newline is taken by \s+ first.
            None => return Some((pos, pos)),
            Some(n) if rx_space(n) => {
                let ws = rest.find(|c: char| !rx_space(c)).unwrap_or(rest.len());
                return Some((pos, pos + ws));
            }
            Some(_) if rest.starts_with("--") => return Some((pos, pos)),
            Some(_) => {}
        }
    }
}

/// `_realign_boundaries`: moves closing quotes/brackets after a sentence end onto the
/// sentence they close; drops empty sentences.
fn realign_boundaries(text: &str, slices: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut realign = 0;
    for (k, &(s1_start, s1_end)) in slices.iter().enumerate() {
        let s1 = (s1_start + realign, s1_end);
        let nonempty = s1.0 < s1.1;
        let Some(&(s2_start, s2_end)) = slices.get(k + 1) else {
            if nonempty {
                out.push(s1);
            }
            continue;
        };
        let s2_text = if s2_start < s2_end {
            &text[s2_start..s2_end]
        } else {
            ""
        };
        if let Some((closer_len, match_len)) = boundary_realignment(s2_text) {
            out.push((s1.0, s2_start + closer_len));
            realign = match_len;
        } else {
            realign = 0;
            if nonempty {
                out.push(s1);
            }
        }
    }
    out
}

/// `nltk.sent_tokenize(text)` with the English model.
pub fn sent_tokenize(text: &str) -> Vec<&str> {
    PunktModel::english().sent_tokenize(text)
}

/// `"\n".join(nltk.sent_tokenize(text))`: what the `transformers` summarization
/// examples feed to rougeLsum.
pub fn split_for_rouge(text: &str) -> String {
    sent_tokenize(text).join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_loads() {
        let m = PunktModel::english();
        assert!(m.abbrev_types.contains("dr"));
        assert!(m.sent_starters.contains("but"));
        assert!(!m.collocations.is_empty());
        assert!(m.ortho_context.len() > 10_000);
    }

    #[test]
    fn word_tokens() {
        assert_eq!(
            word_tokenize_line("Hello, world... (it's) 5. --no  . . . end"),
            vec![
                "Hello", ",", "world", "...", "(", "it", "'s", ")", "5.", "--", "no", ". . .",
                "end"
            ]
        );
    }

    #[test]
    fn basic_split() {
        assert_eq!(
            sent_tokenize("Dr. Smith went home. He was tired."),
            vec!["Dr. Smith went home.", "He was tired."]
        );
        assert_eq!(sent_tokenize(""), Vec::<&str>::new());
        assert_eq!(sent_tokenize("  "), Vec::<&str>::new());
    }
}
