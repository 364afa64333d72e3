//! Kernel sources without copies. WGSL has no includes, so the registry expands two directives in a kernel file
//! before it is compiled:
//!
//! * `//#include NAME KEY=VALUE …` is replaced by `shaders/NAME.wgsl` (a fragment: its leading comment block is
//!   dropped) with each `{{KEY}}` replaced by VALUE. The GEMM parameters and operand bindings (`gemm_params`) and
//!   the workgroup-memory tile loader of both tiled GEMMs (`gemm_tile_load`) are written once this way.
//! * `//#generate store_8x8` is replaced by the write-back of an 8×8 block per invocation (the 128×128 GEMM):
//!   [`Form::Measured`] writes 64 blocks with constant indices, so the accumulators stay in registers (what was
//!   measured on the H200); [`Form::Compact`] writes the same values with two loops, which Mesa's lavapipe compiles
//!   in seconds instead of the minutes its coroutine lowering spends on 64 unrolled blocks after a barrier.
//!
//! A test checks that the measured form of every generated kernel is, byte for byte, the file that was measured
//! (its SHA-256), and both forms are parity-tested wherever they run.

use std::borrow::Cow;

use crate::error::{Error, Result};

/// Which write-back the 128×128 GEMM gets (other kernels are the same in both forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// As measured on hardware GPUs: unrolled, constant indices.
    Measured,
    /// Loops over the block: compiles fast on software adapters.
    Compact,
}

/// Expands the directives of `src`; `fragment` finds an included file's source by name.
pub fn expand<'s>(src: &'s str, form: Form, fragment: impl Fn(&str) -> Option<&'static str>) -> Result<Cow<'s, str>> {
    if !src.contains("//#") {
        return Ok(Cow::Borrowed(src));
    }
    let mut out = String::with_capacity(src.len() * 2);
    for (i, line) in src.split_inclusive('\n').enumerate() {
        let bad = |what: String| Error::Internal(format!("kernel source line {}: {what}", i + 1));
        let text = line.trim_end_matches('\n');
        if let Some(rest) = text.strip_prefix("//#include ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().ok_or_else(|| bad("an include without a name".into()))?;
            let body = fragment(name).ok_or_else(|| bad(format!("no fragment '{name}'")))?;
            let mut body = strip_header(body).to_owned();
            for kv in parts {
                let (k, v) = kv.split_once('=').ok_or_else(|| bad(format!("'{kv}' is not KEY=VALUE")))?;
                body = body.replace(&format!("{{{{{k}}}}}"), v);
            }
            if body.contains("{{") {
                return Err(bad(format!("fragment '{name}' has a placeholder the include does not set")));
            }
            out.push_str(&body);
            if !line.ends_with('\n') {
                out.pop();
            }
        } else if let Some(what) = text.strip_prefix("//#generate ") {
            match what.trim() {
                "store_8x8" => out.push_str(&store_8x8(form)),
                other => return Err(bad(format!("unknown generator '{other}'"))),
            }
            if !line.ends_with('\n') {
                out.pop();
            }
        } else {
            out.push_str(line);
        }
    }
    Ok(Cow::Owned(out))
}

/// A fragment without its leading comment block (the comment lines and the blank line after them).
fn strip_header(src: &str) -> &str {
    let mut rest = src;
    while rest.starts_with("//") {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// The write-back of the 128×128 GEMM: invocation (lid.x, lid.y) holds rows `lid.y + 16i` and columns
/// `lid.x + 16j` (i, j < 8) in `acc[2i + j / 4][j % 4]`.
fn store_8x8(form: Form) -> String {
    const LANES: [&str; 4] = ["x", "y", "z", "w"];
    let mut s = String::from("    let beta_on = p.splits == 1u && p.beta != 0.0;\n");
    match form {
        Form::Measured => {
            for i in 0..8 {
                s.push_str(&format!("    let row{i} = row_base + lid.y + {}u;\n    if (row{i} < p.m) {{\n", 16 * i));
                for j in 0..8 {
                    s.push_str(&format!(
                        "        {{\n            let col = col_base + lid.x + {}u;\n            if (col < p.n) {{\n                \
                         let at = slice + row{i} * p.n + col;\n                var v = acc[{}].{};\n                \
                         if (beta_on) {{ v = v + p.beta * c[at]; }}\n                c[at] = epilogue(v, col);\n            }}\n        }}\n",
                        16 * j,
                        2 * i + j / 4,
                        LANES[j % 4]
                    ));
                }
                s.push_str("    }\n");
            }
        }
        Form::Compact => s.push_str(
            "    for (var i = 0u; i < 8u; i = i + 1u) {\n        let row = row_base + lid.y + 16u * i;\n        \
             if (row < p.m) {\n            for (var j = 0u; j < 8u; j = j + 1u) {\n                \
             let col = col_base + lid.x + 16u * j;\n                if (col < p.n) {\n                    \
             let at = slice + row * p.n + col;\n                    var v = acc[2u * i + j / 4u][j % 4u];\n                    \
             if (beta_on) { v = v + p.beta * c[at]; }\n                    c[at] = epilogue(v, col);\n                }\n            }\n        \
             }\n    }\n",
        ),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_substitute_and_refuse_unknown_names() {
        let frag = |n: &str| (n == "f").then_some("// header\n// more\n\nx = {{A}};\n");
        assert_eq!(expand("a\n//#include f A=1\nb\n", Form::Measured, frag).unwrap(), "a\nx = 1;\nb\n");
        assert!(expand("//#include g\n", Form::Measured, frag).is_err());
        assert!(expand("//#include f\n", Form::Measured, frag).is_err(), "unset placeholder");
        assert!(expand("//#generate nothing\n", Form::Measured, frag).is_err());
    }
}
