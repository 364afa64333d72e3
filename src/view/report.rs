//! `report.html`: one self-contained page per run (no network; the plots inline as PNG data URLs): the job, the
//! backend and adapter, the stage times, the metrics tables (the model against popularity, similarity, documents,
//! efficiency) and the plots. Written last from the run's own run.json, metrics.parquet and plots. A small inline
//! script records on `<body>` how many images decoded and any script error (`data-images`, `data-errors`), which
//! the browser test reads.

use std::fmt::Write;
use std::path::Path;

use base64::Engine;

use crate::error::{Error, Result};
use crate::view::inspect::{read_metrics, value, MetricMap};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#555}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.pair{display:flex;gap:1em;flex-wrap:wrap}.pair figure{flex:1 1 45%}";

/// Writes `report.html` into `root` (the staging folder) from its run.json, metrics.parquet and `plots`.
pub fn write(root: &Path, plots: &[String]) -> Result<()> {
    let run_path = root.join("run.json");
    let bytes = std::fs::read(&run_path).map_err(|e| Error::output(&run_path, "cannot read", e))?;
    let r: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("run.json: {e}")))?;
    let m = read_metrics(&root.join("metrics.parquet"))?;
    let s = |v: &serde_json::Value| esc(v.as_str().unwrap_or("?"));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>embjob: {job}</title><style>{STYLE}</style></head>\n<body>\n<h1>embjob run of job “{job}”</h1>\n",
        job = s(&r["job"])
    );
    let b = &r["backend"];
    let adapter = b["adapter"]["name"].as_str().map(|a| format!(", adapter {}", esc(a))).unwrap_or_default();
    let _ = writeln!(
        h,
        "<p class=\"meta\">run {} · config {} · seed {} · started {} · finished {}<br>backend <b>{}</b> ({}{adapter})</p>",
        s(&r["run_id"]),
        s(&r["config_file"]),
        r["seed"],
        s(&r["started_at"]),
        s(&r["finished_at"]),
        s(&b["used"]),
        s(&b["reason"])
    );
    h.push_str("<h2>Stages</h2>\n<table><tr><th>stage</th><th>seconds</th><th>summary</th></tr>\n");
    for st in r["stages"].as_array().into_iter().flatten() {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{:.2}</td><td>{}</td></tr>",
            s(&st["stage"]),
            st["seconds"].as_f64().unwrap_or(f64::NAN),
            s(&st["summary"])
        );
    }
    h.push_str("</table>\n");
    model_table(&mut h, &m);
    stage_table(&mut h, &m, "similarity", "Similarity (item neighbours against labels and pairs)");
    stage_table(&mut h, &m, "eval_documents", "Documents (neighbours' labels by vector kind)");
    efficiency(&mut h, &m);
    if !plots.is_empty() {
        h.push_str("<h2>Plots</h2>\n");
        let mut i = 0;
        while i < plots.len() {
            // A word's static plot and its best layer's side by side.
            let pair = plots[i].ends_with("_static.png") && i + 1 < plots.len();
            if pair {
                h.push_str("<div class=\"pair\">\n");
                figure(&mut h, root, &plots[i])?;
                figure(&mut h, root, &plots[i + 1])?;
                h.push_str("</div>\n");
                i += 2;
            } else {
                figure(&mut h, root, &plots[i])?;
                i += 1;
            }
        }
    }
    h.push_str("<h2>Files</h2>\n<table><tr><th>file</th><th>rows</th></tr>\n");
    for f in r["outputs"].as_array().into_iter().flatten() {
        let _ = writeln!(h, "<tr><td>{}</td><td class=\"n\">{}</td></tr>", s(&f["file"]), f["rows"]);
    }
    h.push_str("</table>\n");
    h.push_str(
        "<script>\nwindow.addEventListener('error', function (e) { document.body.dataset.errors = (document.body.dataset.errors || '') + e.message + ';'; });\nwindow.addEventListener('load', function () {\n  var imgs = document.images, ok = 0;\n  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }\n  document.body.dataset.images = ok + '/' + imgs.length;\n});\n</script>\n</body></html>\n",
    );
    let path = root.join("report.html");
    std::fs::write(&path, h).map_err(|e| Error::output(&path, "cannot write", e))
}

fn figure(h: &mut String, root: &Path, file: &str) -> Result<()> {
    let path = root.join(file);
    let png = std::fs::read(&path).map_err(|e| Error::output(&path, "cannot read", e))?;
    let data = base64::engine::general_purpose::STANDARD.encode(png);
    let name = file.trim_start_matches("plots/");
    let _ = writeln!(
        h,
        "<figure><img alt=\"{0}\" src=\"data:image/png;base64,{data}\"><figcaption>{0}</figcaption></figure>",
        esc(name)
    );
    Ok(())
}

fn model_table(h: &mut String, m: &MetricMap) {
    let rows: Vec<(&String, f64)> = m
        .iter()
        .filter(|((st, n, i), _)| st == "eval_model" && i.is_none() && !n.ends_with("_examples"))
        .map(|((_, n, _), v)| (n, *v))
        .collect();
    if rows.is_empty() {
        return;
    }
    h.push_str("<h2>Model against popularity (held-out users)</h2>\n<table><tr><th>metric</th><th>model</th><th>popularity</th></tr>\n");
    for (n, v) in rows {
        let p = m.get(&("eval_popularity".to_owned(), n.clone(), None)).map_or("—".into(), |p| value(*p));
        let _ = writeln!(h, "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{p}</td></tr>", esc(n), value(v));
    }
    h.push_str("</table>\n");
}

fn stage_table(h: &mut String, m: &MetricMap, stage: &str, title: &str) {
    let rows: Vec<_> = m.iter().filter(|((st, _, _), _)| st == stage).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(h, "<h2>{}</h2>\n<table><tr><th>metric</th><th>value</th></tr>", esc(title));
    for ((_, n, i), v) in rows {
        let idx = i.map(|i| format!(" [{i}]")).unwrap_or_default();
        let _ = writeln!(h, "<tr><td>{}{idx}</td><td class=\"n\">{}</td></tr>", esc(n), value(*v));
    }
    h.push_str("</table>\n");
}

fn efficiency(h: &mut String, m: &MetricMap) {
    let wanted = [
        ("train", "examples_per_second", "training examples/s"),
        ("train", "seconds", "training seconds"),
        ("contextual", "tokens_per_second", "contextual tokens/s"),
        ("contextual", "documents_per_second", "contextual documents/s"),
        ("efficiency", "peak_rss_mb", "peak RSS (MB)"),
    ];
    let rows: Vec<(&str, f64)> = wanted
        .iter()
        .filter_map(|(st, n, label)| m.get(&((*st).to_owned(), (*n).to_owned(), None)).map(|v| (*label, *v)))
        .collect();
    if rows.is_empty() {
        return;
    }
    h.push_str("<h2>Efficiency</h2>\n<table><tr><th>measure</th><th>value</th></tr>\n");
    for (label, v) in rows {
        let _ = writeln!(h, "<tr><td>{label}</td><td class=\"n\">{}</td></tr>", value(v));
    }
    h.push_str("</table>\n");
}
