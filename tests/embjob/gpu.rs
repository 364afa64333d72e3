//! The wgpu kernels: every registered WGSL file validates with naga, and every operation equals its CPU twin on
//! seeded random inputs (relative error under 1e-4; NaN never passes; outputs are poisoned with NaN before each run
//! so an unwritten element fails). GPU tests run wherever an adapter exists (lavapipe counts); with
//! EMBJOB_REQUIRE_GPU=1 a missing adapter fails them instead of skipping.

use embjob::backend::cpu_kernels as cpu;
use embjob::backend::gpu::kernel_source::Form;
use embjob::backend::gpu::kernels::{self, Kernel};
use embjob::backend::gpu::{Epilogue, GemmKernel, GpuContext};
use embjob::backend::{Activation, AdamStep, AttentionShape, MatDims, PoolMode, SeqShape};
use embjob::linalg::rng::SplitMix;
use sha2::Digest;

/// Every kernel source, in both forms (as measured on hardware GPUs, compact for software adapters).
fn kernel_sources() -> Vec<(String, String)> {
    let mut files: Vec<&str> = Kernel::ALL.iter().map(|k| k.spec().file).collect();
    files.dedup();
    let mut out = Vec::new();
    for file in files {
        for form in [Form::Measured, Form::Compact] {
            let src = kernels::source(file, form).unwrap_or_else(|e| panic!("{file}: {e}")).into_owned();
            out.push((format!("{file} ({form:?})"), src));
        }
    }
    out
}

fn parse(name: &str, src: &str) -> naga::Module {
    naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(src)))
}

#[test]
fn every_kernel_validates_with_naga() {
    let sources = kernel_sources();
    assert!(sources.len() >= 20);
    for (name, src) in &sources {
        let module = parse(name, src);
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name} does not validate: {e:?}"));
        assert!(src.starts_with("// "), "{name} starts with a header comment documenting its bindings");
        assert!(src.contains("Bindings"), "{name} documents its bindings");
        assert!(!src.contains("//#"), "{name}: a directive was left unexpanded");
    }
    for kernel in Kernel::ALL {
        let spec = kernel.spec();
        let src = kernels::source(spec.file, Form::Measured).expect("source");
        let module = parse(spec.file, &src);
        assert!(
            module.entry_points.iter().any(|e| e.name == spec.entry && e.stage == naga::ShaderStage::Compute),
            "{kernel:?}: no compute entry point '{}' in {}.wgsl",
            spec.entry,
            spec.file
        );
    }
    // The host sizes GEMM dispatches from the tile each kernel declares.
    let tile = |name: &str| kernels::tile_of(&kernels::source(name, Form::Measured).expect("registered"));
    assert_eq!((tile("gemm"), tile("gemm_tiled"), tile("gemm_tiled128")), (64, 64, 128));
}

#[test]
fn each_parameter_struct_has_the_layout_of_its_wgsl_struct() {
    for kernel in Kernel::ALL {
        let spec = kernel.spec();
        let src = kernels::source(spec.file, Form::Measured).expect("source");
        let module = parse(spec.file, &src);
        let ty = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(spec.params.name))
            .unwrap_or_else(|| panic!("{kernel:?}: no struct {} in {}.wgsl", spec.params.name, spec.file))
            .1;
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{} is not a struct", spec.params.name)
        };
        let wgsl: Vec<(String, usize)> =
            members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect();
        let rust: Vec<(String, usize)> = (spec.params.layout)().into_iter().map(|(n, o)| (n.to_owned(), o)).collect();
        assert_eq!(rust, wgsl, "{kernel:?}: {} fields and offsets", spec.params.name);
        assert_eq!(spec.params.size, *span as usize, "{kernel:?}: {} size", spec.params.name);
        // Every member is a 4-byte scalar, so the Pod struct's bytes are the uniform's bytes.
        for m in members {
            let inner = &module.types[m.ty].inner;
            assert!(matches!(inner, naga::TypeInner::Scalar(s) if s.width == 4), "{kernel:?}: {:?}", m.name);
        }
    }
}

#[test]
fn generated_gemm_sources_are_the_measured_files_plus_the_epilogue() {
    // SHA-256 of the kernels as measured on the H200 at stop 8 (commit b721668, before they were generated).
    let measured = [
        ("gemm", "e4fbc3e0b5346b54514050cef4d22dc8e8741652aa969e0c50e8d230c67732fd"),
        ("gemm_tiled", "9aa8abe9b01103a2a1e77d52d2e6f596fa13c858cf76eee82a40b413bb8046e2"),
        ("gemm_tiled128", "703f281bd6d1113116adbef4b3a7ca3bc3583ceb279b70294f395b5b36c87a79"),
    ];
    // Since stop 16 they carry the bias epilogue (not measured on a GPU since). Taking out its additions (the
    // parameter fields, binding 5's header line, the epilogue at each store, the two fragments included last)
    // gives back the measured files byte for byte: nothing else in them changed.
    let fields =
        "    bias: u32,    // the epilogue (gemm_epilogue.wgsl): 1 = add bias[col] to each value of C, then act\n    \
                  act: u32,     // the epilogue's activation (activation.wgsl)\n    pad0: u32,\n    pad1: u32,\n";
    let binding = "//   5  storage, read  bias: array<f32>   (the epilogue's bias: see gemm_epilogue.wgsl)\n";
    for (name, want) in measured {
        let src = kernels::source(name, Form::Measured).expect("source");
        let end = src.find("\n\n@group(0) @binding(5)").expect("the epilogue comes last");
        let original = format!("{}\n", &src[..end])
            .replacen(fields, "", 1)
            .replacen(binding, "", 1)
            .replace("epilogue(v, col)", "v")
            .replace("bias_act(v, i % p.n)", "v");
        let got: String = sha2::Sha256::digest(original.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want, "{name}.wgsl without the epilogue is not the measured file");
    }
    // The compact form differs only in the 128×128 write-back.
    assert_eq!(
        kernels::source("gemm_tiled", Form::Compact).expect("src"),
        kernels::source("gemm_tiled", Form::Measured).expect("src")
    );
    let (m, c) = (
        kernels::source("gemm_tiled128", Form::Measured).expect("src"),
        kernels::source("gemm_tiled128", Form::Compact).expect("src"),
    );
    let stores = |s: &str| s.matches("c[at] = epilogue(v, col);").count();
    assert!(stores(&m) == 64 && stores(&c) == 1);
    let head = |s: &str| s[..s.find("let beta_on").expect("write-back")].to_owned();
    assert_eq!(head(&m), head(&c));
}

/// The shared device (see `support::gpu_backend`), or `None` (skip) when there is no adapter and
/// EMBJOB_REQUIRE_GPU is not set.
fn gpu() -> Option<&'static GpuContext> {
    crate::support::gpu_backend().map(|g| g.context())
}

fn random(seed: u64, n: usize, scale: f64) -> Vec<f32> {
    let mut r = SplitMix::new(seed);
    (0..n).map(|_| (r.normal() * scale) as f32).collect()
}

fn poison(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

fn assert_close(gpu: &[f32], cpu: &[f32], what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g} (unwritten or not finite)");
        assert!((g - c).abs() <= 1e-4 * scale.max(c.abs()), "{what}[{i}]: gpu {g} vs cpu {c}");
    }
}

#[test]
fn gemm_with_every_transpose_equals_cpu() {
    let Some(g) = gpu() else { return };
    // Every kernel (register-only, 64×64 and 128×128 workgroup-memory tiles), whichever this adapter uses by default.
    // The last two shapes split k into slices (few output tiles, long k), as the model's dlogits·Wᵀ does. Each
    // product runs plain (beta 0), accumulating (beta 0.5), and with the epilogue: beta 0.5, the bias, and an
    // activation that changes from one shape and transpose to the next, so every kernel meets every activation,
    // split and not.
    let acts = [Activation::Identity, Activation::Relu, Activation::Gelu, Activation::GeluTanh];
    for kernel in [GemmKernel::Register, GemmKernel::Tiled, GemmKernel::Tiled128] {
        let shapes = [(1, 1, 1), (7, 5, 3), (65, 70, 33), (128, 96, 64), (37, 29, 3000), (130, 70, 1500)];
        for (s, (m, n, k)) in shapes.into_iter().enumerate() {
            let transposes = [(false, false), (true, false), (false, true), (true, true)];
            for (t, (ta, tb)) in transposes.into_iter().enumerate() {
                let a = random(1, m * k, 1.0);
                let b = random(2, k * n, 1.0);
                let c0 = random(3, m * n, 1.0);
                let bias = random(4, n, 3.0);
                let d = MatDims { m, n, k };
                let what = format!("{kernel:?} gemm {m}×{n}×{k} ta={ta} tb={tb}");
                let act = acts[(s + t) % acts.len()];
                for (beta, epilogue) in [(0.0f32, false), (0.5, false), (0.5, true)] {
                    let mut want = c0.clone();
                    cpu::matmul(&a, ta, &b, tb, &mut want, d, beta).expect("cpu matmul");
                    if epilogue {
                        cpu::bias_act(&mut want, &bias, n, act);
                    }
                    let c = if beta == 0.0 { g.upload(&poison(m * n)).expect("c") } else { g.upload(&c0).expect("c") };
                    let (ga, gb, gbias) =
                        (g.upload(&a).expect("a"), g.upload(&b).expect("b"), g.upload(&bias).expect("bias"));
                    let epi = epilogue.then_some(Epilogue { bias: &gbias, act });
                    let run = || {
                        let mut enc = g.encoder();
                        g.matmul_with(kernel, &mut enc, (&ga, ta), (&gb, tb), &c, d, beta, epi).expect("gemm");
                        g.submit(enc);
                        g.download(&c).expect("download")
                    };
                    let got = run();
                    let label = if epilogue {
                        format!("{what} beta={beta} + bias, {act:?}")
                    } else {
                        format!("{what} beta={beta}")
                    };
                    assert_close(&got, &want, &label);
                    if beta == 0.0 {
                        // Split or not, a product repeats bit for bit.
                        let again = run();
                        assert!(got.iter().zip(&again).all(|(x, y)| x.to_bits() == y.to_bits()), "{what} repeats");
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_refuses_operands_smaller_than_their_shape() {
    // The GEMM kernels run without injected bounds checks, so the host checks the operands' sizes, the bias too.
    let Some(g) = gpu() else { return };
    let (a, b, c) = (g.upload(&[1.0; 6]).expect("a"), g.upload(&[1.0; 6]).expect("b"), g.upload(&[0.0; 4]).expect("c"));
    let mut enc = g.encoder();
    assert!(g.matmul(&mut enc, &a, false, &b, false, &c, MatDims { m: 2, n: 2, k: 3 }, 0.0).is_ok());
    let err = g.matmul(&mut enc, &a, false, &b, false, &c, MatDims { m: 3, n: 2, k: 3 }, 0.0).expect_err("too small");
    assert!(err.to_string().contains("too small"), "{err}");
    let short = g.upload(&[1.0]).expect("bias");
    let epi = Epilogue { bias: &short, act: Activation::Relu };
    let err =
        g.matmul_bias_act(&mut enc, &a, false, &b, false, &c, MatDims { m: 2, n: 2, k: 3 }, epi).expect_err("bias");
    assert!(err.to_string().contains("bias 1"), "{err}");
    g.submit(enc);
}

#[test]
fn softmax_xent_equals_cpu_and_stays_finite() {
    let Some(g) = gpu() else { return };
    for (rows, cols) in [(1, 3), (5, 300), (17, 1000)] {
        let logits = random(4, rows * cols, 20.0);
        let mut r = SplitMix::new(5);
        let targets: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
        let (mut want, mut want_loss) = (logits.clone(), vec![0.0; rows]);
        cpu::softmax_xent(&mut want, &targets, cols, &mut want_loss);
        let gl = g.upload(&logits).expect("logits");
        let gt = g.upload_idx(&targets).expect("targets");
        let loss = g.upload(&poison(rows)).expect("losses");
        let mut enc = g.encoder();
        g.softmax_xent(&mut enc, &gl, &gt, rows, cols, &loss).expect("dispatch");
        g.submit(enc);
        assert_close(&g.download(&gl).expect("grad"), &want, &format!("softmax gradient {rows}×{cols}"));
        assert_close(&g.download(&loss).expect("loss"), &want_loss, &format!("softmax loss {rows}×{cols}"));
    }
}

fn bags(seed: u64, bags: usize, items: usize) -> (Vec<u32>, Vec<u32>) {
    let mut r = SplitMix::new(seed);
    let mut members = Vec::new();
    let mut offsets = vec![0u32];
    for _ in 0..bags {
        for _ in 0..1 + r.below(4) {
            members.push(r.below(items) as u32);
        }
        offsets.push(members.len() as u32);
    }
    (members, offsets)
}

#[test]
fn embedding_bag_forward_and_backward_equal_cpu() {
    let Some(g) = gpu() else { return };
    let (v, d, b) = (40, 5, 23);
    let table = random(6, v * d, 1.0);
    let (items, offsets) = bags(7, b, v);
    // Weighted bags: weight = 0.5 + (user + item) % 3.
    let examples: Vec<embjob::recommend::split::Example> = (0..b)
        .map(|r| embjob::recommend::split::Example {
            user: r as u32,
            inputs: items[offsets[r] as usize..offsets[r + 1] as usize].to_vec(),
            target: 0,
        })
        .collect();
    let batch = embjob::recommend::model::Batch::weighted(examples.iter(), |u, i| 0.5 + ((u + i) % 3) as f32);
    for mean in [false, true] {
        let mut want = vec![0.0; b * d];
        cpu::embedding_bag(&table, d, &batch.items, &batch.offsets, &batch.weights, mean, &mut want);
        let (gt, gi, go) = (
            g.upload(&table).expect("t"),
            g.upload_idx(&batch.items).expect("i"),
            g.upload_idx(&batch.offsets).expect("o"),
        );
        let gw = g.upload(&batch.weights).expect("w");
        let out = g.upload(&poison(b * d)).expect("out");
        let mut enc = g.encoder();
        g.embedding_bag(&mut enc, &gt, d, (&gi, &go, &gw), b, mean, &out).expect("dispatch");
        g.submit(enc);
        assert_close(&g.download(&out).expect("pooled"), &want, &format!("embedding bag mean={mean}"));

        let d_pooled = random(8, b * d, 1.0);
        let mut want = vec![f32::NAN; v * d];
        cpu::embedding_bag_backward(
            &d_pooled,
            d,
            &batch.offsets,
            &batch.weights,
            &batch.seg_items,
            &batch.seg_offsets,
            &batch.seg_examples,
            &batch.seg_weights,
            mean,
            &mut want,
            true,
        );
        let grad = g.upload(&poison(v * d)).expect("grad");
        let dp = g.upload(&d_pooled).expect("dp");
        let (si, so, se) = (
            g.upload_idx(&batch.seg_items).expect("si"),
            g.upload_idx(&batch.seg_offsets).expect("so"),
            g.upload_idx(&batch.seg_examples).expect("se"),
        );
        let gsw = g.upload(&batch.seg_weights).expect("seg weights");
        let mut enc = g.encoder();
        let segments = batch.seg_items.len();
        g.embedding_bag_backward(&mut enc, &dp, d, (&go, &gw), (&si, &so, &se, &gsw), segments, mean, &grad, true)
            .expect("dispatch");
        g.submit(enc);
        assert_close(&g.download(&grad).expect("grad"), &want, &format!("embedding gradient mean={mean}"));
        // Without zeroing (lazy optimizers): the batch's rows are written, every other row is left as it was.
        let grad = g.upload(&poison(v * d)).expect("grad");
        let mut enc = g.encoder();
        g.embedding_bag_backward(&mut enc, &dp, d, (&go, &gw), (&si, &so, &se, &gsw), segments, mean, &grad, false)
            .expect("dispatch");
        g.submit(enc);
        let got = g.download(&grad).expect("grad");
        for item in 0..v {
            let row = item * d..(item + 1) * d;
            if batch.seg_items.contains(&(item as u32)) {
                assert_close(&got[row.clone()], &want[row], &format!("touched row {item}"));
            } else {
                assert!(got[row].iter().all(|x| x.is_nan()), "untouched row {item} was written");
            }
        }
    }
}

#[test]
fn bias_relu_and_column_sums_equal_cpu() {
    let Some(g) = gpu() else { return };
    let (rows, cols) = (37, 19);
    let x = random(9, rows * cols, 1.0);
    let bias = random(10, cols, 1.0);
    let x: Vec<f32> = x.iter().map(|v| v * 4.0).collect(); // GELU's tails, and tanh past its f32 range
    for act in [Activation::Identity, Activation::Relu, Activation::Gelu, Activation::GeluTanh] {
        let mut want = x.clone();
        cpu::bias_act(&mut want, &bias, cols, act);
        let (gx, gb) = (g.upload(&x).expect("x"), g.upload(&bias).expect("b"));
        let mut enc = g.encoder();
        g.bias_act(&mut enc, &gx, &gb, rows, cols, act).expect("dispatch");
        g.submit(enc);
        assert_close(&g.download(&gx).expect("x"), &want, &format!("bias_act {act:?}"));
    }
    let act = random(11, rows * cols, 1.0);
    let grad = random(12, rows * cols, 1.0);
    let mut want = grad.clone();
    cpu::relu_backward(&mut want, &act);
    let (gg, ga) = (g.upload(&grad).expect("g"), g.upload(&act).expect("a"));
    let mut enc = g.encoder();
    g.relu_backward(&mut enc, &gg, &ga, rows * cols).expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&gg).expect("g"), &want, "relu_backward");

    // Short (one pass) and tall (chunks of 256 rows, then the chunks) column sums.
    for (rows, cols) in [(rows, cols), (1000, 70)] {
        let x = random(11, rows * cols, 1.0);
        let mut want = vec![0.0; cols];
        cpu::column_sums(&x, rows, cols, &mut want);
        let (gx, out) = (g.upload(&x).expect("x"), g.upload(&poison(cols)).expect("out"));
        let mut enc = g.encoder();
        g.column_sums(&mut enc, &gx, rows, cols, &out).expect("dispatch");
        g.submit(enc);
        assert_close(&g.download(&out).expect("sums"), &want, &format!("column_sums {rows}×{cols}"));
    }
}

#[test]
fn adam_and_sgd_steps_equal_cpu() {
    let Some(g) = gpu() else { return };
    let n = 1000;
    let (p0, grad) = (random(13, n, 1.0), random(14, n, 0.1));
    let (m0, v0) = (random(15, n, 0.01), random(16, n, 0.01).iter().map(|x| x.abs()).collect::<Vec<_>>());
    let step = AdamStep { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, t: 3 };
    let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
    cpu::adam(&mut p, &grad, &mut m, &mut v, step);
    let (gp, gg, gm, gv) =
        (g.upload(&p0).expect("p"), g.upload(&grad).expect("g"), g.upload(&m0).expect("m"), g.upload(&v0).expect("v"));
    // The step state on the device: set to step 3, then advanced to step 4.
    let state = g.upload(&[f32::NAN; 4]).expect("state");
    let mut enc = g.encoder();
    g.adam_tick(&mut enc, &state, step.beta1, step.beta2, 3).expect("tick");
    g.adam(&mut enc, &gp, &gg, &gm, &gv, &state, step).expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&gp).expect("p"), &p, "adam param");
    assert_close(&g.download(&gm).expect("m"), &m, "adam m");
    assert_close(&g.download(&gv).expect("v"), &v, "adam v");
    let step4 = AdamStep { t: 4, ..step };
    cpu::adam(&mut p, &grad, &mut m, &mut v, step4);
    let mut enc = g.encoder();
    g.adam_tick(&mut enc, &state, step.beta1, step.beta2, 0).expect("tick");
    g.adam(&mut enc, &gp, &gg, &gm, &gv, &state, step4).expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&gp).expect("p"), &p, "adam param, step 4");
    let s = g.download(&state).expect("state");
    assert_eq!(s[0].to_bits(), 4, "the step counter");
    // β^t by repeated squaring, as f32::powi: the same bias correction as the CPU's, bit for bit.
    assert_eq!(s[1], 1.0 - 0.9f32.powi(4), "1 - β1^4");
    assert!((s[2] - 1.0 / (1.0 - 0.999f32.powi(4)).sqrt()).abs() <= 1e-6 * s[2], "1 / sqrt(1 - β2^4)");

    let (mut p, mut vel) = (p0.clone(), m0.clone());
    cpu::sgd(&mut p, &grad, &mut vel, 0.1, 0.9, 0.001);
    let (gp, gvel) = (g.upload(&p0).expect("p"), g.upload(&m0).expect("vel"));
    let mut enc = g.encoder();
    g.sgd(&mut enc, &gp, &gg, &gvel, 0.1, 0.9, 0.001).expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&gp).expect("p"), &p, "sgd param");
    assert_close(&g.download(&gvel).expect("vel"), &vel, "sgd velocity");
}

/// Through the Backend trait, a run of Adam steps on two parameters (t = 1, 2, 3), then a new run (t = 1 again) and a
/// jump (t = 7): the device's step state follows every step as the CPU's arithmetic does.
#[test]
fn adam_steps_through_the_backend_follow_the_step_count_like_the_cpu() {
    let Some(gpu) = crate::support::gpu_backend() else { return };
    let cpu = embjob::backend::Cpu::new();
    let backends: [&dyn embjob::backend::Backend; 2] = [&cpu, gpu];
    let mut results = Vec::new();
    for be in backends {
        let a = [random(21, 300, 1.0), random(22, 300, 0.1), vec![0.0; 300], vec![0.0; 300]];
        let b = [random(23, 70, 1.0), random(24, 70, 0.1), vec![0.0; 70], vec![0.0; 70]];
        let ta: Vec<_> = a.iter().map(|x| be.tensor(x).expect("tensor")).collect();
        let tb: Vec<_> = b.iter().map(|x| be.tensor(x).expect("tensor")).collect();
        for t in [1, 2, 3, 1, 7] {
            let step = AdamStep { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, t };
            be.adam(&ta[0], &ta[1], &ta[2], &ta[3], step).expect("adam");
            be.adam(&tb[0], &tb[1], &tb[2], &tb[3], step).expect("adam");
        }
        results.push((be.read(&ta[0]).expect("a"), be.read(&tb[0]).expect("b")));
    }
    assert_close(&results[1].0, &results[0].0, "param a after five steps");
    assert_close(&results[1].1, &results[0].1, "param b after five steps");
}

/// A seeded sparse matrix with empty rows and columns, and its dense copy.
fn sparse(seed: u64, rows: usize, cols: usize) -> embjob::linalg::sparse::Csr {
    let mut r = SplitMix::new(seed);
    let data: Vec<Vec<(u32, f64)>> = (0..rows)
        .map(|i| {
            if i % 7 == 3 {
                return Vec::new();
            }
            let mut row = Vec::new();
            for c in 0..cols {
                if c % 5 != 2 && r.below(3) == 0 {
                    row.push((c as u32, r.normal()));
                }
            }
            row
        })
        .collect();
    embjob::linalg::sparse::Csr::from_rows(cols, &data)
}

#[test]
fn sparse_products_equal_cpu() {
    let Some(g) = gpu() else { return };
    let (rows, cols, k) = (45, 70, 6);
    let x = sparse(21, rows, cols);
    let dense = x.to_dense();
    let b = random(22, cols * k, 1.0);
    let upload = |x: &embjob::linalg::sparse::Csr| {
        let indptr: Vec<u32> = x.indptr.iter().map(|&v| v as u32).collect();
        let values: Vec<f32> = x.values.iter().map(|&v| v as f32).collect();
        (
            g.upload_idx(&indptr).expect("indptr"),
            g.upload_idx(&x.indices).expect("indices"),
            g.upload(&values).expect("values"),
        )
    };
    let gx = upload(&x);
    // X·B against the dense product.
    let mut want = vec![0.0f32; rows * k];
    for i in 0..rows {
        for j in 0..k {
            want[i * k + j] = (0..cols).map(|c| dense[i * cols + c] * f64::from(b[c * k + j])).sum::<f64>() as f32;
        }
    }
    let (gb, out) = (g.upload(&b).expect("b"), g.upload(&poison(rows * k)).expect("out"));
    let mut enc = g.encoder();
    g.csr_mul(&mut enc, rows, cols, (&gx.0, &gx.1, &gx.2), &gb, k, &out).expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&out).expect("xb"), &want, "csr_mul");
    // X·Xᵀ and, through the transpose, XᵀX.
    for (what, m, n) in [("outer", &x, rows), ("gram", &embjob::backend::cpu::transpose(&x), cols)] {
        let d = m.to_dense();
        let inner = m.cols;
        let want: Vec<f32> = (0..n * n)
            .map(|e| (0..inner).map(|c| d[(e / n) * inner + c] * d[(e % n) * inner + c]).sum::<f64>() as f32)
            .collect();
        let gm = upload(m);
        let out = g.upload(&poison(n * n)).expect("out");
        let mut enc = g.encoder();
        g.csr_outer(&mut enc, n, inner, (&gm.0, &gm.1, &gm.2), &out).expect("dispatch");
        g.submit(enc);
        assert_close(&g.download(&out).expect("outer"), &want, what);
    }
}

#[test]
fn target_ranks_equal_cpu_with_masks_and_ties() {
    let Some(g) = gpu() else { return };
    for (rows, cols) in [(1, 1), (9, 70), (40, 1000)] {
        // Scores on a coarse grid, so ties are common (a tie does not outrank the target).
        let scores: Vec<f32> = random(23, rows * cols, 3.0).iter().map(|v| v.round()).collect();
        let mut r = SplitMix::new(24);
        let targets: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
        let (mut mask_items, mut mask_offsets) = (Vec::new(), vec![0u32]);
        for (row, &t) in targets.iter().enumerate() {
            for _ in 0..row % 4 {
                mask_items.push(r.below(cols) as u32);
            }
            if row % 3 == 0 {
                mask_items.push(t); // the target itself is never masked
            }
            mask_offsets.push(mask_items.len() as u32);
        }
        let mut want = vec![f32::NAN; rows];
        cpu::target_ranks(&scores, cols, &targets, &mask_items, &mask_offsets, &mut want);
        let (gs, gt) = (g.upload(&scores).expect("s"), g.upload_idx(&targets).expect("t"));
        let (gmi, gmo) = (g.upload_idx(&mask_items).expect("mi"), g.upload_idx(&mask_offsets).expect("mo"));
        let ranks = g.upload(&poison(rows)).expect("ranks");
        let mut enc = g.encoder();
        g.target_ranks(&mut enc, &gs, rows, cols, &gt, &gmi, &gmo, &ranks).expect("dispatch");
        g.submit(enc);
        assert_eq!(g.download(&ranks).expect("ranks"), want, "ranks {rows}×{cols}");
        assert!(want.iter().all(|&x| x >= 1.0 && x <= cols as f32));
    }
}

#[test]
fn a_buffer_over_the_adapter_limit_is_a_clear_error() {
    let Some(g) = gpu() else { return };
    let limit = g.limits.max_storage_buffer_binding_size.min(g.limits.max_buffer_size);
    let too_many = (limit / 4 + 1) as usize;
    if too_many > 1 << 30 {
        return; // an adapter with multi-GiB bindings: not worth allocating the host side here
    }
    let e = g.upload(&vec![0.0; too_many]).err().expect("over the limit");
    let msg = e.to_string();
    assert!(msg.contains("max_storage_buffer_binding_size"), "{msg}");
    assert_eq!(e.exit_code(), 4);
}

/// A food job (10 epochs, d = 3) on one backend.
fn food_on(backend: &str) -> crate::support::Job {
    use crate::support::*;
    let job = Job::new()
        .copy(&repo().join("pipelines/data/food_favorites.csv"), "food.csv")
        .copy(&repo().join("pipelines/data/food_items.csv"), "items.csv")
        .toml(&format!(
            "[job]\nname='food'\nseed=42\nbackend='{backend}'\n[input]\npath='food.csv'\nlayout='long'\nuser='user_id'\n\
             item='item'\norder='rank'\n[pca]\nn_components=4\n[model]\nembedding_dim=3\nhidden_units=16\n[train]\nepochs=4\n\
             batch_size=64\n[eval]\nk=[5]\nneighbors=5\nlabels='items.csv'\nlabels_category='cuisine'\n[output]\ndir='out'\n"
        ));
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{backend}: {}", r.stderr);
    job
}

fn metric_values(job: &crate::support::Job) -> Vec<(String, String, Option<i64>, f64)> {
    use crate::support::*;
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let idx = m.column("index").expect("index").as_materialized_series().i64().expect("i64").clone();
    (0..m.height())
        .filter(|&r| s[r] != "efficiency" && n[r] != "seconds" && n[r] != "examples_per_second")
        .map(|r| (s[r].clone(), n[r].clone(), idx.get(r), v[r]))
        .collect()
}

#[test]
fn the_food_job_gives_the_same_metrics_on_both_backends() {
    if gpu().is_none() {
        return;
    }
    let (cpu_job, gpu_job) = (food_on("cpu"), food_on("gpu"));
    let (c, g) = (metric_values(&cpu_job), metric_values(&gpu_job));
    assert_eq!(c.len(), g.len());
    for (a, b) in c.iter().zip(&g) {
        assert_eq!((&a.0, &a.1, a.2), (&b.0, &b.1, b.2));
        // f32 kernels summing in other orders: losses and variances agree closely; ranking metrics may move by a
        // few examples where scores tie within rounding.
        let tol = if a.1.contains("loss") || a.0 == "pca" { 1e-3 * a.3.abs().max(1.0) } else { 0.02 };
        assert!((a.3 - b.3).abs() <= tol, "{}/{}[{:?}]: cpu {} vs gpu {}", a.0, a.1, a.2, a.3, b.3);
    }
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gpu_job.out().join("latest/run.json")).expect("run.json")).expect("json");
    assert_eq!(run["backend"]["used"], "gpu");
    assert!(run["backend"]["adapter"]["name"].is_string(), "run.json names the adapter");
}

#[test]
fn two_gpu_runs_with_one_seed_give_bit_identical_embeddings() {
    if gpu().is_none() {
        return;
    }
    let (a, b) = (food_on("gpu"), food_on("gpu"));
    for f in ["embeddings.parquet", "neighbors.parquet", "pca_projections.parquet"] {
        assert!(a.latest_parquet(f).equals(&b.latest_parquet(f)), "{f} differs between two GPU runs");
    }
}

#[test]
fn cosine_neighbours_equal_cpu() {
    let Some(g) = gpu() else { return };
    let (n, d, k) = (300, 7, 10);
    let x = random(17, n * d, 1.0);
    let (want_idx, want_sim) = cpu::cosine_top_k(&x, n, d, k).expect("cpu top k");
    let (idx, sim) = g.cosine_top_k(&g.upload(&x).expect("x"), n, d, k).expect("top k");
    assert_close(&sim, &want_sim, "cosines");
    // Neighbours agree except where two cosines tie within rounding.
    let same = idx.iter().zip(&want_idx).filter(|(a, b)| a == b).count();
    assert!(same as f64 >= 0.99 * (n * k) as f64, "only {same} of {} neighbours agree", n * k);
    for r in 0..n {
        assert!(!idx[r * k..(r + 1) * k].contains(&(r as u32)), "row {r} lists itself");
        assert!(sim[r * k..(r + 1) * k].windows(2).all(|w| w[0] >= w[1]), "row {r} not in descending order");
    }
}

#[test]
fn a_model_too_large_for_the_adapter_stops_with_the_tensor_and_the_limit() {
    let Some(g) = gpu() else { return };
    let limit = g.limits.max_storage_buffer_binding_size.min(g.limits.max_buffer_size);
    if limit > 256 << 20 {
        eprintln!("SKIPPED: the adapter binds {limit} bytes; this check needs a small-limit adapter such as lavapipe");
        return;
    }
    // logits = batch × items floats, just over the limit.
    let items = 4100usize;
    let batch = (limit as usize / 4) / items + 1;
    let mut csv = String::from("user,item\n");
    for i in 0..items {
        csv.push_str(&format!("{},{}\n", 1 + i % 2, i));
    }
    let job = crate::support::Job::new().file("d.csv", csv).toml(&format!(
        "[job]\nname='big'\nbackend='gpu'\n[input]\npath='d.csv'\nlayout='long'\n[model]\nembedding_dim=2\nhidden_units=0\n\
         [train]\nbatch_size={batch}\n[eval]\nk=[5]\n[output]\ndir='out'\n"
    ));
    let r = job.run(&[]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("logits") && r.stderr.contains("max_storage_buffer_binding_size"), "{}", r.stderr);
    assert!(job.latest().is_none());
    assert!(job.runs().iter().all(|r| !r.starts_with(".staging")), "{:?}", job.runs());
}

#[test]
fn kernels_from_the_environment_need_the_kernel_dev_feature() {
    // EMBJOB_SHADER_DIR compiles kernels without a rebuild (and the GEMMs without bounds checks): a tuning tool.
    // A normal build refuses it with an error naming the variable and the feature, and runs nothing.
    if gpu().is_none() || cfg!(feature = "kernel-dev") {
        return;
    }
    use crate::support::*;
    let job = long_job("").file("kernels/gemm.wgsl", "this is not WGSL");
    let config = job.config();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embjob"))
        .args(["run", config.to_str().expect("utf-8"), "--quiet", "--backend", "gpu"])
        .env("NODEVICE_SELECT", "1")
        .env("EMBJOB_SHADER_DIR", job.path("kernels"))
        .output()
        .expect("run embjob");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("EMBJOB_SHADER_DIR") && stderr.contains("kernel-dev"), "{stderr}");
    job.assert_no_run();
}

#[test]
fn encoder_kernels_equal_cpu() {
    let Some(g) = gpu() else { return };
    // Three sequences padded to 7 tokens (lengths 7, 4, 1), 2 heads of 3 (an odd head size), width 6.
    let (batch, seq, heads, head_dim) = (3usize, 7usize, 2usize, 3usize);
    let (cols, rows, vocab, types) = (heads * head_dim, batch * seq, 11usize, 2usize);
    let lens = [7u32, 4, 1];
    let mut r = SplitMix::new(31);
    let ids: Vec<u32> = (0..rows).map(|_| r.below(vocab) as u32).collect();
    let type_ids: Vec<u32> = (0..rows).map(|_| r.below(types) as u32).collect();
    let (word, pos, ty) =
        (random(32, vocab * cols, 1.0), random(33, (seq + 2) * cols, 1.0), random(34, types * cols, 1.0));
    let (gamma, beta) = (random(35, cols, 1.0), random(36, cols, 0.5));
    let eps = 1e-12f32;
    let up = |v: &[f32]| g.upload(v).expect("upload");
    let (gids, gtypes, glens) =
        (g.upload_idx(&ids).expect("ids"), g.upload_idx(&type_ids).expect("types"), g.upload_idx(&lens).expect("lens"));
    let (gw, gp, gt, gg, gb) = (up(&word), up(&pos), up(&ty), up(&gamma), up(&beta));

    // Embeddings + LayerNorm, with a position offset of 2 (RoBERTa's).
    let mut want = vec![f32::NAN; rows * cols];
    cpu::embed_layernorm((&word, &pos, &ty), &ids, &type_ids, seq, 2, (&gamma, &beta, eps), cols, &mut want);
    let out = up(&poison(rows * cols));
    let mut enc = g.encoder();
    g.embed_layernorm(&mut enc, (&gids, &gtypes), (&gw, &gp, &gt), (&gg, &gb, eps), (rows, cols, seq, 2), &out)
        .expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&out).expect("embeddings"), &want, "embed_layernorm");

    // Residual + LayerNorm.
    let (x, res) = (random(37, rows * cols, 2.0), random(38, rows * cols, 1.0));
    let mut want = x.clone();
    cpu::add_layernorm(&mut want, &res, cols, (&gamma, &beta, 1e-5));
    let (gx, gres) = (up(&x), up(&res));
    let mut enc = g.encoder();
    g.add_layernorm(&mut enc, &gx, &gres, (&gg, &gb, 1e-5), rows, cols).expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&gx).expect("x"), &want, "add_layernorm");

    // Attention with the padding mask: padded keys must not count, so poison them.
    let mut qkv = random(39, rows * 3 * cols, 1.5);
    for (b, &len) in lens.iter().enumerate() {
        for t in len as usize..seq {
            let row = &mut qkv[(b * seq + t) * 3 * cols..(b * seq + t + 1) * 3 * cols];
            row[cols..].iter_mut().for_each(|v| *v = 1e30); // k and v of padding
        }
    }
    let shape = AttentionShape { batch, seq, heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt() };
    let mut want = vec![f32::NAN; rows * cols];
    cpu::attention(&qkv, &lens, batch, seq, heads, head_dim, shape.scale, &mut want).expect("cpu attention");
    assert!(want.iter().all(|v| v.is_finite() && v.abs() < 100.0), "the CPU twin counted padding");
    let out = up(&poison(rows * cols));
    let mut enc = g.encoder();
    g.attention(&mut enc, &up(&qkv), &glens, shape, &out).expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&out).expect("attention"), &want, "attention");

    // Pooling (mean over the real tokens, first token, max) and l2 normalisation.
    let hidden = random(40, rows * cols, 1.0);
    let gh = up(&hidden);
    for mode in [PoolMode::Mean, PoolMode::Cls, PoolMode::Max] {
        let mut want = vec![f32::NAN; batch * cols];
        cpu::pool(&hidden, &lens, seq, cols, mode, &mut want);
        let out = up(&poison(batch * cols));
        let mut enc = g.encoder();
        g.pool(&mut enc, &gh, &glens, SeqShape { batch, seq, cols }, mode, &out).expect("dispatch");
        g.submit(enc);
        assert_close(&g.download(&out).expect("pooled"), &want, &format!("pool {mode:?}"));
    }
    let mut x = random(41, 5 * cols, 3.0);
    x[..cols].iter_mut().for_each(|v| *v = 0.0); // a zero row stays zero
    let mut want = x.clone();
    cpu::l2_normalize(&mut want, cols);
    let gx = up(&x);
    let mut enc = g.encoder();
    g.l2_normalize(&mut enc, &gx, 5, cols).expect("dispatch");
    g.submit(enc);
    assert_close(&g.download(&gx).expect("unit rows"), &want, "l2_normalize");
}

/// The sampled softmax's kernels through the Backend trait, on poisoned outputs: candidates' rows and columns gathered, the
/// loss and gradient over shared negatives and each row's own target (inactive columns exactly 0), and lazy Adam on
/// selected columns of a row-major matrix and on rows with a full-size gradient (everything else untouched).
#[test]
fn sampled_softmax_kernels_equal_cpu() {
    use embjob::backend::{SampledColumns, Selected};
    let Some(gpu) = crate::support::gpu_backend() else { return };
    let cpu = embjob::backend::Cpu::new();
    let backends: [&dyn embjob::backend::Backend; 2] = [&cpu, gpu];
    let (rows, v, pre) = (7, 50, 6);
    let columns: Vec<u32> = vec![1, 4, 9, 10, 17, 23, 31, 44, 49];
    let n = columns.len();
    let shared: Vec<f32> = (0..n).map(|j| if j % 3 == 1 { 0.0 } else { 1.0 }).collect();
    let targets: Vec<u32> = vec![1, 4, 0, 7, 3, 4, 8];
    let log_q: Vec<f32> = random(31, n, 1.0).iter().map(|x| -2.0 - x.abs()).collect();
    let mut results = Vec::new();
    for be in backends {
        let w = be.tensor(&random(32, pre * v, 1.0)).expect("w");
        let mut idx = be.index_buffer(n).expect("idx");
        be.write_indices(&mut idx, &columns).expect("idx");
        // Columns of a pre × v matrix (strided), and rows of it seen as v × pre (contiguous).
        let ws = be.tensor(&poison(pre * n)).expect("ws");
        be.gather(&w, &idx, pre, (1, v), &ws).expect("gather columns");
        let wr = be.tensor(&poison(pre * n)).expect("wr");
        be.gather(&w, &idx, pre, (pre, 1), &wr).expect("gather rows");
        let logits = be.tensor(&random(33, rows * n, 8.0)).expect("logits");
        let (bias, lq, sh) = (
            be.tensor(&random(34, n, 1.0)).expect("bias"),
            be.tensor(&log_q).expect("log_q"),
            be.tensor(&shared).expect("shared"),
        );
        let mut t = be.index_buffer(rows).expect("targets");
        be.write_indices(&mut t, &targets).expect("targets");
        let (losses, bias_grad) = (be.tensor(&poison(rows)).expect("l"), be.tensor(&poison(n)).expect("bg"));
        let c = SampledColumns { count: n, bias: &bias, log_q: &lq, shared: &sh, targets: &t };
        be.sampled_softmax_xent(&logits, rows, &c, &losses, &bias_grad).expect("xent");
        // Lazy Adam, three steps: the columns of w (compact gradient), then rows 3, 8, 20 of a 25×4 table with a
        // full-size gradient.
        let (m, vv) = (be.tensor(&vec![0.0; pre * v]).expect("m"), be.tensor(&vec![0.0; pre * v]).expect("v"));
        let g = be.tensor(&random(35, pre * n, 1.0)).expect("g");
        let table = be.tensor(&random(36, 100, 1.0)).expect("table");
        let (tm, tv) = (be.tensor(&vec![0.0; 100]).expect("m"), be.tensor(&vec![0.0; 100]).expect("v"));
        let tg = be.tensor(&random(37, 100, 1.0)).expect("tg");
        let mut rows_idx = be.index_buffer(3).expect("rows");
        be.write_indices(&mut rows_idx, &[3, 8, 20]).expect("rows");
        for step in 1..=3 {
            let s = AdamStep { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, t: step };
            let cols =
                Selected { idx: &idx, width: pre, param_stride: (1, v), grad_stride: (1, n), grad_by_index: false };
            be.adam_selected(&w, &g, &m, &vv, &cols, s).expect("adam columns");
            let rs =
                Selected { idx: &rows_idx, width: 4, param_stride: (4, 1), grad_stride: (4, 1), grad_by_index: true };
            be.adam_selected(&table, &tg, &tm, &tv, &rs, s).expect("adam rows");
        }
        let read = |t: &embjob::backend::Tensor| be.read(t).expect("read");
        results.push([read(&ws), read(&logits), read(&losses), read(&bias_grad), read(&w), read(&table), read(&wr)]);
    }
    let names = [
        "gathered columns",
        "sampled gradient",
        "sampled losses",
        "bias gradient",
        "lazy Adam columns",
        "lazy Adam rows",
    ];
    for (i, name) in names.iter().enumerate() {
        assert_close(&results[1][i], &results[0][i], name);
    }
    // The gathers pick exactly the source's values.
    let w0 = random(32, pre * v, 1.0);
    for (j, &c) in columns.iter().enumerate() {
        for e in 0..pre {
            assert_eq!(results[0][0][j * pre + e], w0[e * v + c as usize], "column {c}[{e}]");
            assert_eq!(results[0][6][j * pre + e], w0[c as usize * pre + e], "row {c}[{e}]");
        }
    }
    // Inactive columns (another row's target, not a shared negative) have gradient exactly 0; each row's gradient
    // sums to 0 (softmax − onehot).
    let grad = &results[0][1];
    for r in 0..rows {
        let row = &grad[r * n..(r + 1) * n];
        for j in 0..n {
            if shared[j] == 0.0 && j != targets[r] as usize {
                assert_eq!(row[j], 0.0, "row {r} column {j}");
            }
        }
        assert!(row.iter().map(|&x| f64::from(x)).sum::<f64>().abs() < 1e-6, "row {r} sums to 0");
    }
    // Lazy Adam moved the selected entries only.
    let t0 = random(36, 100, 1.0);
    for (i, (&a, &b)) in results[0][4].iter().zip(&w0).enumerate() {
        assert_eq!(a != b, columns.contains(&((i % v) as u32)), "w[{i}]");
    }
    for (i, (&a, &b)) in results[0][5].iter().zip(&t0).enumerate() {
        assert_eq!(a != b, [3, 8, 20].contains(&(i / 4)), "table[{i}]");
    }
}
