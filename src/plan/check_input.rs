//! `[input]` checked into an [`InputSpec`]: the files (as listed before planning), their format and separator,
//! and the columns of the layout. Keys that do not apply to the layout are mistakes, not silently ignored.

use std::path::{Path, PathBuf};

use super::config::{Config, Format, InputConfig, Layout};
use super::facts::Facts;
use super::problems::Problems;
use crate::data::input::{InputColumns, InputSpec};

pub(super) fn plan_input(config: &Config, base: &Path, facts: &Facts, problems: &mut Problems) -> Option<InputSpec> {
    let input = &config.input;
    let path = base.join(&input.path);
    let before = problems.count();
    let (files, root) = match &facts.input {
        Ok(found) => found.clone(),
        Err(message) => {
            problems.add("input.path", message.clone());
            (Vec::new(), PathBuf::new())
        }
    };
    let many = facts.input_is_dir || path.to_string_lossy().contains(['*', '?', '[']);
    if files.is_empty() {
        problems.add("input.path", format!("no data files (.parquet, .csv) in {}", path.display()));
    } else if !many && !facts.input_exists {
        problems.add("input.path", format!("file not found: {}", path.display()));
    }
    let format = input_format(input, files.first().unwrap_or(&path), problems);
    let separator = match input.separator.as_deref() {
        None => b',',
        Some(s) if s.len() == 1 && s.is_ascii() => s.as_bytes()[0],
        Some("\\t") => b'\t',
        Some(s) => {
            problems.add("input.separator", format!("must be one ASCII character (got {s:?})"));
            b','
        }
    };
    let separator_problem = input.separator.is_some() && format == Some(Format::Parquet);
    let columns = input_columns(input, problems);
    if let (true, Some(f)) = (many, format) {
        one_format(&files, f, problems);
    }
    // The separator on a Parquet input is reported, but does not stop the rest of the input from being planned.
    let ok = problems.count() == before;
    if separator_problem {
        problems.add("input.separator", "only applies to CSV input");
    }
    match (ok, format) {
        (true, Some(format)) => Some(InputSpec { path, format, columns, separator, files, root }),
        _ => None,
    }
}

/// `input.format`, or the first file's extension.
fn input_format(input: &InputConfig, first: &Path, problems: &mut Problems) -> Option<Format> {
    if let Some(f) = input.format {
        return Some(f);
    }
    let format = format_of(first);
    if format.is_none() {
        problems.add(
            "input.format",
            format!("cannot tell the format of {} from its extension; set \"csv\" or \"parquet\"", first.display()),
        );
    }
    format
}

/// The format a file's extension says (`.csv`, `.tsv`, `.txt`; `.parquet`, `.pq`).
pub(super) fn format_of(path: &Path) -> Option<Format> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("csv") | Some("tsv") | Some("txt") => Some(Format::Csv),
        Some("parquet") | Some("pq") => Some(Format::Parquet),
        _ => None,
    }
}

/// Every file of a folder or glob in the one format.
fn one_format(files: &[PathBuf], f: Format, problems: &mut Problems) {
    let wanted: &[&str] = match f {
        Format::Csv => &["csv", "tsv", "txt"],
        Format::Parquet => &["parquet", "pq"],
    };
    if let Some(odd) = files.iter().find(|p| {
        let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        !wanted.contains(&ext.as_str())
    }) {
        problems
            .add("input.path", format!("{} is not {f:?} like the other files (one format per input)", odd.display()));
    }
}

/// The columns of the layout, with every key that does not apply to it reported.
fn input_columns(input: &InputConfig, problems: &mut Problems) -> InputColumns {
    let layout_name = format!("{:?}", input.layout).to_lowercase();
    let mut unused = |keys: &[(&str, bool)]| {
        for (key, set) in keys {
            if *set {
                problems.add(&format!("input.{key}"), format!("not used with layout \"{layout_name}\""));
            }
        }
    };
    let (user, item, order, text) =
        (input.user.is_some(), input.item.is_some(), input.order.is_some(), input.text.is_some());
    let (id, columns, exclude, weight) =
        (input.id.is_some(), input.columns.is_some(), input.exclude.is_some(), input.weight.is_some());
    match input.layout {
        Layout::Long => {
            unused(&[("text", text), ("id", id), ("columns", columns), ("exclude", exclude)]);
            InputColumns::Long {
                user: input.user.clone().unwrap_or_else(|| "user".into()),
                item: input.item.clone().unwrap_or_else(|| "item".into()),
                order: input.order.clone(),
                weight: input.weight.clone(),
            }
        }
        Layout::List => {
            let keys = [
                ("text", text),
                ("id", id),
                ("columns", columns),
                ("order", order),
                ("exclude", exclude),
                ("weight", weight),
            ];
            unused(&keys);
            InputColumns::List {
                user: input.user.clone().unwrap_or_else(|| "user".into()),
                items: input.item.clone().unwrap_or_else(|| "items".into()),
            }
        }
        Layout::Text => {
            let keys = [
                ("user", user),
                ("item", item),
                ("order", order),
                ("columns", columns),
                ("exclude", exclude),
                ("weight", weight),
            ];
            unused(&keys);
            InputColumns::Text { text: input.text.clone().unwrap_or_else(|| "text".into()), id: input.id.clone() }
        }
        Layout::Numeric => {
            unused(&[("user", user), ("item", item), ("order", order), ("text", text), ("weight", weight)]);
            numeric_columns(input, problems)
        }
    }
}

fn numeric_columns(input: &InputConfig, problems: &mut Problems) -> InputColumns {
    if let Some(cols) = &input.columns {
        if cols.is_empty() {
            problems.add("input.columns", "must name at least one column");
        }
        let mut seen = std::collections::HashSet::new();
        for c in cols {
            if !seen.insert(c) {
                problems.add("input.columns", format!("column '{c}' is listed twice"));
            }
        }
    }
    if input.columns.is_some() && input.exclude.is_some() {
        problems.add("input.exclude", "give either input.columns or input.exclude, not both");
    }
    InputColumns::Numeric {
        columns: input.columns.clone(),
        id: input.id.clone(),
        exclude: input.exclude.clone().unwrap_or_default(),
    }
}
