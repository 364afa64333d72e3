//! The token pattern means what it means in Python, where scikit-learn runs it: `\w` is a letter, a number or `_`
//! (no combining marks, join controls or other connector punctuation), `\b` follows that `\w`, `\s` includes the
//! information separators. Checked on every code point Python 3.11 assigns, and against scikit-learn's analyzer on
//! texts where the regex crate's classes differ (fixtures written by tests/fixtures/make_*.py).

use embjob::plan::config::{DfBound, Weighting};
use embjob::text::token_pattern::{is_word_char, TokenPattern, DEFAULT};
use embjob::text::vectorizer::BowParams;
use proptest::prelude::*;

use crate::support::*;

/// (class name, ranges) from python_unicode_classes.txt.
fn python_classes() -> Vec<(String, Vec<(u32, u32)>)> {
    let text = std::fs::read_to_string(fixture("python_unicode_classes.txt")).expect("fixture");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split(' ');
            let name = parts.next().expect("name").to_owned();
            let ranges = parts
                .map(|r| {
                    let (a, b) = r.split_once('-').expect("range");
                    (u32::from_str_radix(a, 16).expect("hex"), u32::from_str_radix(b, 16).expect("hex"))
                })
                .collect();
            (name, ranges)
        })
        .collect()
}

fn contains(ranges: &[(u32, u32)], cp: u32) -> bool {
    ranges.iter().any(|&(a, b)| a <= cp && cp <= b)
}

#[test]
fn word_and_space_classes_equal_pythons_on_every_assigned_code_point() {
    let classes = python_classes();
    let get = |n: &str| &classes.iter().find(|(name, _)| name == n).expect("class").1;
    let (word, space, unassigned) = (get("word"), get("space"), get("unassigned"));
    let w = TokenPattern::translated(r"^\w$").expect("pattern");
    let s = TokenPattern::translated(r"^\s$").expect("pattern");
    let (mut checked, mut differ) = (0, Vec::new());
    for cp in 0..=0x10FFFFu32 {
        let Some(c) = char::from_u32(cp) else { continue };
        if contains(unassigned, cp) {
            continue; // not in Python 3.11's Unicode 14 tables; the regex crate's are newer
        }
        checked += 1;
        let text = c.to_string();
        let py_word = contains(word, cp);
        if is_word_char(c) != py_word || (w.tokens(&text).expect("match").len() == 1) != py_word {
            differ.push(format!("U+{cp:04X} word (python {py_word})"));
        }
        if (s.tokens(&text).expect("match").len() == 1) != contains(space, cp) {
            differ.push(format!("U+{cp:04X} space"));
        }
    }
    assert!(checked > 280_000, "{checked}");
    assert!(
        differ.is_empty(),
        "{} code points differ from Python: {:?}",
        differ.len(),
        &differ[..differ.len().min(20)]
    );
}

fn plan(pattern: &str, lowercase: bool) -> BowParams {
    BowParams {
        lowercase,
        token_pattern: TokenPattern::new(pattern).expect("pattern"),
        stop_words: Vec::new(),
        min_df: DfBound::Count(1),
        max_df: DfBound::Fraction(1.0),
        max_features: None,
        weighting: Weighting::Count,
    }
}

#[test]
fn tokens_equal_scikit_learns_on_marks_emoji_zwj_digits_and_case() {
    let text = std::fs::read_to_string(fixture("unicode_tokens.json")).expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let texts: Vec<&str> = v["texts"].as_array().expect("texts").iter().map(|t| t.as_str().expect("str")).collect();
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 16);
    for case in cases {
        let pattern = case["pattern"].as_str().expect("pattern");
        let lowercase = case["lowercase"].as_bool().expect("bool");
        let plan = plan(pattern, lowercase);
        for (text, want) in texts.iter().zip(case["tokens"].as_array().expect("tokens")) {
            let want: Vec<&str> = want.as_array().expect("list").iter().map(|t| t.as_str().expect("str")).collect();
            let mut lowered = String::new();
            let got = embjob::text::vectorizer::tokenize(&plan, text, &mut lowered).expect("tokenize");
            assert_eq!(got, want, "pattern {pattern:?}, lowercase {lowercase}, text {text:?}");
        }
    }
}

#[test]
fn a_variation_selector_does_not_join_the_word_after_it() {
    // The tweet that showed the bug: scikit-learn's vocabulary has "love", not "\u{FE0F}love".
    let job = Job::new()
        .file("t.csv", "id,text\n1,\"I \u{2764}\u{FE0F}love it\"\n2,\"love \u{FE0F}love\"\n")
        .toml("[job]\nname = \"t\"\nbackend = \"cpu\"\n[input]\npath = \"t.csv\"\nlayout = \"text\"\nid = \"id\"\n[output]\ndir = \"out\"\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vocab = job.latest_parquet("vocabulary.parquet");
    assert_eq!(strs(&vocab, "token"), ["it", "love"]);
    assert_eq!(i64s(&vocab, "count"), [1, 3]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The direct scan for scikit-learn's default pattern gives the tokens of the translated pattern.
    #[test]
    fn default_pattern_scan_equals_its_translation(text in "(\\PC|[\u{300}\u{FE0F}\u{200D}_ ]){0,40}") {
        let fast = TokenPattern::new(DEFAULT).expect("pattern");
        let general = TokenPattern::translated(DEFAULT).expect("pattern");
        prop_assert_eq!(fast.tokens(&text).expect("scan"), general.tokens(&text).expect("regex"));
    }
}
