//! `bow.token_pattern` with the meaning it has in Python, where scikit-learn's `CountVectorizer` runs it.
//!
//! Python's `re` and Rust's `regex` disagree on what a word character is. Python's `\w` (str patterns) is
//! `str.isalnum()` or `_`: the letters (L*) and numbers (Nd, Nl, No) and `_`. The regex crate's `\w` adds the
//! combining marks (Mn, Mc, Me), every connector punctuation and the join controls, and leaves out No (`²`, `½`).
//! `\b` follows `\w`, so "\u{FE0F}love" (an emoji variation selector, Mn) was one token here and "love" in Python.
//! Python's `\s` also counts U+001C..U+001F. The pattern is therefore translated before it is compiled: `\w`, `\W`,
//! `\s`, `\S` become explicit classes, and `\b`, `\B` look-arounds on Python's word class (compiled with
//! fancy-regex, which adds look-around to the regex crate). scikit-learn's default pattern takes a direct scan that
//! computes the same tokens (a test compares the two on random Unicode text). The classes are checked on every code
//! point Python 3.11 assigns (tests/fixtures/python_unicode_classes.txt).

use std::fmt;

/// Python's `\w` as a class body: letters, numbers, underscore.
const WORD: &str = r"\p{L}\p{N}_";
/// Python's `\s` as a class body: the White_Space characters and the four information separators.
const SPACE: &str = r"\s\x1C-\x1F";

/// scikit-learn's default `token_pattern`.
pub const DEFAULT: &str = r"(?u)\b\w\w+\b";

/// Python's `\w` for one character.
#[inline]
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    let ranges = word_ranges();
    let i = ranges.partition_point(|&(_, end)| end < c);
    ranges.get(i).is_some_and(|&(start, _)| start <= c)
}

/// The ranges of Python's word class, from the regex crate's own Unicode tables (the same tables the translated
/// patterns use).
fn word_ranges() -> &'static [(char, char)] {
    use regex_syntax::hir::{Class, HirKind};
    static RANGES: std::sync::OnceLock<Vec<(char, char)>> = std::sync::OnceLock::new();
    RANGES.get_or_init(|| {
        let hir = regex_syntax::Parser::new().parse(&format!("[{WORD}]"));
        match hir.as_ref().map(|h| h.kind()) {
            Ok(HirKind::Class(Class::Unicode(c))) => c.ranges().iter().map(|r| (r.start(), r.end())).collect(),
            // The class is a constant; regex-syntax parses it to a Unicode class.
            _ => vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
        }
    })
}

/// A compiled token pattern.
#[derive(Clone)]
pub struct TokenPattern {
    source: String,
    matcher: Matcher,
}

#[derive(Clone)]
enum Matcher {
    /// `\b\w\w+\b`: maximal runs of two or more word characters.
    DefaultWords,
    Plain(regex::Regex),
    LookAround(fancy_regex::Regex),
}

impl fmt::Debug for TokenPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenPattern({:?})", self.source)
    }
}

impl TokenPattern {
    /// Compiles a Python pattern; the error says why it is not valid.
    pub fn new(python: &str) -> Result<TokenPattern, String> {
        let matcher =
            if python == DEFAULT || python == r"\b\w\w+\b" { Matcher::DefaultWords } else { Self::compile(python)? };
        Ok(TokenPattern { source: python.to_owned(), matcher })
    }

    /// The same pattern through the general translation (tests compare it with the direct scan).
    pub fn translated(python: &str) -> Result<TokenPattern, String> {
        Ok(TokenPattern { source: python.to_owned(), matcher: Self::compile(python)? })
    }

    fn compile(python: &str) -> Result<Matcher, String> {
        let (rust, look_around) = translate(python)?;
        if look_around {
            let re = fancy_regex::Regex::new(&rust).map_err(|e| e.to_string())?;
            if re.captures_len() > 2 {
                return Err("more than one capture group (scikit-learn allows at most one)".into());
            }
            Ok(Matcher::LookAround(re))
        } else {
            let re = regex::Regex::new(&rust).map_err(|e| e.to_string())?;
            if re.captures_len() > 2 {
                return Err("more than one capture group (scikit-learn allows at most one)".into());
            }
            Ok(Matcher::Plain(re))
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The tokens of `text`: each match, or its group when the pattern has one (as scikit-learn's `findall`).
    pub fn tokens<'t>(&self, text: &'t str) -> Result<Vec<&'t str>, String> {
        match &self.matcher {
            Matcher::DefaultWords => Ok(word_runs(text)),
            Matcher::Plain(re) if re.captures_len() == 2 => {
                Ok(re.captures_iter(text).map(|c| c.get(1).map_or("", |m| m.as_str())).collect())
            }
            Matcher::Plain(re) => Ok(re.find_iter(text).map(|m| m.as_str()).collect()),
            Matcher::LookAround(re) if re.captures_len() == 2 => {
                let mut out = Vec::new();
                for c in re.captures_iter(text) {
                    let c = c.map_err(|e| e.to_string())?;
                    out.push(c.get(1).map_or("", |m| m.as_str()));
                }
                Ok(out)
            }
            Matcher::LookAround(re) => {
                let mut out = Vec::new();
                for m in re.find_iter(text) {
                    out.push(m.map_err(|e| e.to_string())?.as_str());
                }
                Ok(out)
            }
        }
    }
}

/// Maximal runs of at least two Python word characters.
fn word_runs(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<(usize, usize)> = None; // (byte offset, chars so far)
    for (i, c) in text.char_indices() {
        if is_word_char(c) {
            start = Some(start.map_or((i, 1), |(s, n)| (s, n + 1)));
        } else if let Some((s, n)) = start.take() {
            if n >= 2 {
                out.push(&text[s..i]);
            }
        }
    }
    if let Some((s, n)) = start {
        if n >= 2 {
            out.push(&text[s..]);
        }
    }
    out
}

/// Rewrites a Python pattern into regex-crate syntax with Python's classes. Returns the pattern and whether it
/// needs look-around (`\b`, `\B`). Inside a class, `[`, `&` and `~` are literal in Python but operators in the
/// regex crate, so they are escaped.
fn translate(python: &str) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(python.len() * 2);
    let mut look_around = false;
    let mut chars = python.chars().peekable();
    // Inside a class: the number of characters since its `[` (and `^`), for the literal `]` rule.
    let mut class: Option<usize> = None;
    let word_boundary = format!("(?:(?<=[{WORD}])(?![{WORD}])|(?<![{WORD}])(?=[{WORD}]))");
    let not_boundary = format!("(?:(?<=[{WORD}])(?=[{WORD}])|(?<![{WORD}])(?![{WORD}]))");
    while let Some(c) = chars.next() {
        match (c, class) {
            ('\\', _) => {
                let Some(e) = chars.next() else { return Err("the pattern ends with a lone backslash".into()) };
                let inside = class.is_some();
                match (e, inside) {
                    ('w', false) => out.push_str(&format!("[{WORD}]")),
                    ('W', false) => out.push_str(&format!("[^{WORD}]")),
                    ('s', false) => out.push_str(&format!("[{SPACE}]")),
                    ('S', false) => out.push_str(&format!("[^{SPACE}]")),
                    ('w', true) => out.push_str(WORD),
                    ('W', true) => out.push_str(&format!("[^{WORD}]")),
                    ('s', true) => out.push_str(SPACE),
                    ('S', true) => out.push_str(&format!("[^{SPACE}]")),
                    ('b', false) => {
                        out.push_str(&word_boundary);
                        look_around = true;
                    }
                    ('B', false) => {
                        out.push_str(&not_boundary);
                        look_around = true;
                    }
                    // In a class, Python's `\b` is a backspace.
                    ('b', true) => out.push_str(r"\x08"),
                    ('Z', false) => out.push_str(r"\z"),
                    _ => {
                        out.push('\\');
                        out.push(e);
                    }
                }
                if let Some(n) = class.as_mut() {
                    *n += 1;
                }
            }
            ('[', None) => {
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
                class = Some(0);
            }
            (']', Some(n)) if n > 0 => {
                out.push(']');
                class = None;
            }
            (']', Some(0)) => {
                out.push_str(r"\]");
                class = Some(1);
            }
            ('[' | '&' | '~', Some(n)) => {
                out.push('\\');
                out.push(c);
                class = Some(n + 1);
            }
            (_, Some(n)) => {
                out.push(c);
                class = Some(n + 1);
            }
            (_, None) => out.push(c),
        }
    }
    if class.is_some() {
        return Err("a character class is not closed".into());
    }
    Ok((out, look_around))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(p: &str, t: &str) -> Vec<String> {
        TokenPattern::new(p).unwrap().tokens(t).unwrap().into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn default_pattern_splits_at_marks_as_python_does() {
        assert_eq!(toks(DEFAULT, "\u{2764}\u{FE0F}love it"), ["love", "it"]);
        assert_eq!(toks(DEFAULT, "cafe\u{301} x2 ½½"), ["cafe", "x2", "½½"]);
    }

    #[test]
    fn classes_escape_regex_crate_operators() {
        assert_eq!(toks(r"[\w&]+", "a&b c"), ["a&b", "c"]);
        assert_eq!(toks(r"[]a]+", "]a] b"), ["]a]"]);
        assert_eq!(toks(r"(\w+)-", "ab-cd-"), ["ab", "cd"]);
    }
}
