//! The architecture's invariants, checked on the source itself (README, "Architecture"):
//!
//! * the rooms of `src/` form layers, top to bottom as [`LAYERS`] lists them, and a file imports only from its own
//!   room or a room below it: no arrow runs back up;
//! * no import circle between files (a module reaching into its own children, `mod x;` and `pub use x::…`, is
//!   containment, not an arrow);
//! * polars is used in `src/data/` only, clap and indicatif in `src/main.rs` only;
//! * no function is longer than [`MAX_FN_LINES`] lines unless a comment right above it says why (`// Long: …`).
//!
//! The import reader is deliberately plain: every `crate::…` path (with `{…}` groups expanded) and `super::…` /
//! `self::…` path outside comments and string literals, resolved to the longest module of the crate it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms of `src/`, from the top layer down. A room imports only rooms after it in this list.
const LAYERS: &[&str] = &[
    "tools",     // benchmarks and generators beside the product
    "job",       // a job end to end: load, the stage loop, run folders, run.json, shards
    "view",      // plots, report.html, `embjob show`
    "stages",    // the stages of a job, each from its part of the plan
    "plan",      // the config as written and the validated plan (pure: built from facts read first)
    "finetune",  // training a pretrained encoder: backward pass, losses, AdamW
    "encoder",   // pretrained Transformer encoders
    "recommend", // the embedding-layer recommender
    "text",      // tokens and bag-of-words
    "pca",       // covariance, Gram, Lanczos and randomized PCA
    "eval",      // evaluation as pure functions
    "data",      // the I/O edge (polars) and its plain types
    "backend",   // the Backend traits, the CPU and wgpu backends
    "linalg",    // dense and sparse matrices, eigensolvers, the seeded generator
    "runtime",   // stop requests, progress reports, metrics, memory budgets
    "error",     // the one error type
];

/// Rooms whose code is pure computation: from `data` they may use the plain types only.
const PURE: &[&str] = &["recommend", "text", "pca", "eval", "backend", "linalg"];

/// Functions longer than this need a stated reason.
const MAX_FN_LINES: usize = 80;

fn src() -> PathBuf {
    crate::support::repo().join("src")
}

/// Every `.rs` file under `src/` but `main.rs` (the binary), with its module path (`job::shard::merge`; a
/// `mod.rs` is its folder's module; `lib.rs` is the root, "").
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src()).expect("under src").to_string_lossy().replace('\\', "/");
        if rel == "main.rs" {
            continue;
        }
        let module = rel.trim_end_matches(".rs").trim_end_matches("/mod").trim_end_matches("lib").replace('/', "::");
        out.insert(module, f);
    }
    out
}

/// The source without comments and string or char literals (their text replaced by nothing), lines kept.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) && !ident_byte(b, i) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j + close.len();
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..].iter().position(|&x| x == b'\'').map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                // A multi-byte char: the closing quote within 5 bytes, before any identifier end.
                let s = &src[i + 1..];
                s.chars()
                    .next()
                    .filter(|ch| !ch.is_ascii())
                    .map(|ch| i + 1 + ch.len_utf8())
                    .filter(|&e| b.get(e) == Some(&b'\''))
            };
            match end {
                Some(e) => {
                    out.push_str("' '");
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = src[i..].chars().next().expect("char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// The paths after `crate::`, `super::` and `self::` in `code` (groups expanded), as (root, segments).
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for root in ["crate", "super", "self"] {
        let pat = format!("{root}::");
        let mut from = 0;
        while let Some(p) = code[from..].find(&pat) {
            let at = from + p;
            from = at + pat.len();
            // Not the tail of a longer path (`a::super::…`) or of an identifier.
            if at > 0 && (ident_byte(code.as_bytes(), at) || code[..at].ends_with("::")) {
                continue;
            }
            // `super::super::x`: keep the whole chain in the root.
            let mut root_s = root.to_owned();
            let mut rest = &code[from..];
            while let Some(r) = rest.strip_prefix("super::") {
                root_s.push_str("::super");
                rest = r;
            }
            for segs in expand(rest) {
                out.push((root_s.clone(), segs));
            }
        }
    }
    out
}

/// `a::b::{c, d::e}` → [a,b,c], [a,b,d,e]; stops at the first character that is not part of a path.
fn expand(s: &str) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    let mut i = 0;
    let b = s.as_bytes();
    // `crate::{…}`: the group comes first.
    let s_owned;
    let s = if s.starts_with('{') {
        s_owned = format!("::{s}");
        s_owned.as_str()
    } else {
        s
    };
    let b = if s.len() == b.len() { b } else { s.as_bytes() };
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i > start {
            segs.push(s[start..i].to_owned());
        }
        if s[i..].starts_with("::{") {
            let open = i + 2;
            let mut depth = 0;
            let mut close = open;
            for (j, c) in s[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = &s[open + 1..close];
            let mut parts = Vec::new();
            let (mut depth, mut last) = (0, 0);
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(&inner[last..j]);
                        last = j + 1;
                    }
                    _ => {}
                }
            }
            parts.push(&inner[last..]);
            let mut out = Vec::new();
            for part in parts {
                let part = part.trim();
                if part.is_empty() {
                    continue;
                }
                for tail in expand(part) {
                    let mut full = segs.clone();
                    full.extend(tail.into_iter().filter(|t| t != "self"));
                    out.push(full);
                }
            }
            return out;
        }
        if s[i..].starts_with("::") {
            i += 2;
            continue;
        }
        return vec![segs];
    }
}

/// The module a path names: the longest known module that is a prefix of it.
fn resolve(modules: &BTreeMap<String, PathBuf>, from: &str, root: &str, segs: &[String]) -> Option<String> {
    let mut base: Vec<String> = if root.starts_with("crate") {
        Vec::new()
    } else {
        from.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect()
    };
    if root.starts_with("super") || root.starts_with("self") {
        let ups = root.matches("super").count();
        // A mod.rs file is its folder's module: `super` is the folder's parent, as for any other file.
        for _ in 0..ups {
            base.pop()?;
        }
    }
    let mut full = base;
    full.extend(segs.iter().cloned());
    (0..=full.len()).rev().map(|n| full[..n].join("::")).find(|m| modules.contains_key(m))
}

/// Module → the modules it imports (containment excluded: a module's references to its own descendants).
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_only(&std::fs::read_to_string(file).expect("read"));
        let mut to = BTreeSet::new();
        for (root, segs) in paths(&code) {
            let Some(target) = resolve(&modules, module, &root, &segs) else { continue };
            let descendant = module.is_empty() || target.starts_with(&format!("{module}::"));
            if target != *module && !descendant && !target.is_empty() {
                to.insert(target);
            }
        }
        graph.insert(module.clone(), to);
    }
    graph
}

fn room(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

#[test]
fn every_room_is_listed_in_a_layer() {
    let rooms: BTreeSet<String> = modules().keys().filter(|m| !m.is_empty()).map(|m| room(m).to_owned()).collect();
    for r in &rooms {
        assert!(LAYERS.contains(&r.as_str()), "src/{r} is not in a layer of tests/embjob/architecture.rs (LAYERS)");
    }
    for l in LAYERS {
        assert!(rooms.contains(*l), "LAYERS lists '{l}', which src/ does not have");
    }
}

#[test]
fn imports_point_down_the_layers() {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == room(m));
    let mut upward = Vec::new();
    for (from, tos) in import_graph() {
        for to in tos {
            if let (Some(a), Some(b)) = (rank(&from), rank(&to)) {
                if a > b {
                    upward.push(format!("{from} -> {to} ({} imports {}, a layer above it)", room(&from), room(&to)));
                }
            }
        }
    }
    assert!(upward.is_empty(), "imports that run back up:\n{}", upward.join("\n"));
}

#[test]
fn no_import_circle_between_modules() {
    let graph = import_graph();
    // Tarjan's strongly connected components; any with more than one module is a circle.
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        circles: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("low");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("low");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.circles.push(component);
            }
        }
    }
    let mut s = State {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        circles: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    let explain: Vec<String> = s
        .circles
        .iter()
        .map(|c| {
            let arrows: Vec<String> = c
                .iter()
                .flat_map(|a| graph[a].iter().filter(|b| c.contains(b)).map(move |b| format!("{a} -> {b}")))
                .collect();
            format!("{}: {}", c.join(", "), arrows.join("; "))
        })
        .collect();
    assert!(explain.is_empty(), "import circles:\n{}", explain.join("\n"));
}

#[test]
fn the_import_reader_sees_groups_super_and_nested_paths() {
    // The checks above are only as good as the reader: it must see every form an import takes.
    let code = code_only(
        "use crate::{a::B, c::{d, e::F}};\n// crate::comment::Ignored\nlet s = \"crate::string::Ignored\";\n\
         fn f() { super::g::h(); super::super::x::Y; crate::p::q::r(); let c = '{'; }\n",
    );
    let got: Vec<(String, Vec<String>)> = paths(&code);
    let want = [
        ("crate", vec!["a", "B"]),
        ("crate", vec!["c", "d"]),
        ("crate", vec!["c", "e", "F"]),
        ("crate", vec!["p", "q", "r"]),
        ("super", vec!["g", "h"]),
        ("super::super", vec!["x", "Y"]),
    ];
    for (root, segs) in want {
        let segs: Vec<String> = segs.into_iter().map(str::to_owned).collect();
        assert!(got.contains(&(root.to_owned(), segs.clone())), "{root}::{segs:?} not seen in {got:?}");
    }
    assert!(!got.iter().any(|(_, s)| s.contains(&"Ignored".to_owned())), "{got:?}");
    // An arrow that runs back up is found: a made-up module tree where linalg imports job.
    let mut modules = BTreeMap::new();
    for m in ["job", "job::pipeline", "linalg", "linalg::dense"] {
        modules.insert(m.to_owned(), PathBuf::new());
    }
    let to = resolve(&modules, "linalg::dense", "crate", &["job".into(), "pipeline".into(), "run".into()]);
    assert_eq!(to.as_deref(), Some("job::pipeline"));
    let to = resolve(&modules, "linalg::dense", "super", &["Matrix".into()]);
    assert_eq!(to.as_deref(), Some("linalg"));
}

#[test]
fn polars_clap_and_indicatif_stay_at_their_edges() {
    for (module, file) in modules() {
        let code = code_only(&std::fs::read_to_string(&file).expect("read"));
        if room(&module) != "data" {
            assert!(!code.contains("polars::"), "{module} uses polars: only src/data/ does");
        }
        assert!(
            !code.contains("clap::") && !code.contains("indicatif"),
            "{module}: clap and indicatif live in main.rs"
        );
    }
    for (module, tos) in import_graph() {
        if PURE.contains(&room(&module)) {
            for to in tos.iter().filter(|t| room(t) == "data") {
                assert!(
                    to == "data::dataset" || to == "data::table",
                    "{module} is pure computation but imports {to} (from data only its plain types)"
                );
            }
        }
    }
}

/// (module, function, first line, lines) of every function in src/ over [`MAX_FN_LINES`] without a `// Long:`
/// comment in the lines right above it (doc comments and attributes may come between).
fn long_functions() -> Vec<(String, String, usize, usize)> {
    let mut out = Vec::new();
    for (module, file) in modules().into_iter().chain([("main".to_owned(), src().join("main.rs"))]) {
        let text = std::fs::read_to_string(&file).expect("read");
        let code = code_only(&text);
        let lines: Vec<&str> = code.lines().collect();
        let raw: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let Some(at) = t.find("fn ") else { continue };
            let before = &t[..at];
            let is_fn = before.split_whitespace().all(|w| {
                matches!(w, "pub" | "pub(crate)" | "pub(super)" | "const" | "unsafe" | "async" | "extern")
                    || w.starts_with("pub(")
            });
            if !is_fn {
                continue;
            }
            let name: String = t[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // The body: from the first `{` at the signature's end to its matching `}`.
            let mut depth = 0i32;
            let mut opened = false;
            let mut end = None;
            'scan: for (m, l) in lines.iter().enumerate().skip(n) {
                for c in l.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => {
                            depth -= 1;
                            if opened && depth == 0 {
                                end = Some(m);
                                break 'scan;
                            }
                        }
                        ';' if !opened => break 'scan,
                        _ => {}
                    }
                }
            }
            let Some(end) = end else { continue };
            let len = end - n + 1;
            if len <= MAX_FN_LINES {
                continue;
            }
            let mut k = n;
            let mut reason = false;
            while k > 0 {
                k -= 1;
                let above = raw[k].trim_start();
                if above.starts_with("// Long:") {
                    reason = true;
                    break;
                }
                if !(above.starts_with("//") || above.starts_with("#[") || above.starts_with("#![")) {
                    break;
                }
            }
            if !reason {
                out.push((module.clone(), name, n + 1, len));
            }
        }
    }
    out
}

#[test]
fn functions_fit_on_a_screen_or_say_why_not() {
    let long: Vec<String> =
        long_functions().into_iter().map(|(m, f, line, len)| format!("{m}::{f} (line {line}): {len} lines")).collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines without a `// Long: <reason>` comment above them:\n{}",
        long.join("\n")
    );
}
