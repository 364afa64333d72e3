//! The wgpu backend's own checks: every registered WGSL file validates with naga, its parameter structs match the
//! host's, every GEMM kernel equals the CPU on every transpose, and whole jobs agree with the CPU's. (Every
//! operation's parity with its CPU twin, on each backend: backend_ops.rs.) GPU tests run wherever an adapter exists
//! (lavapipe counts); with EMBJOB_REQUIRE_GPU=1 a missing adapter fails them instead of skipping.

use embjob::backend::cpu;
use embjob::backend::gpu::kernel_source::Form;
use embjob::backend::gpu::kernels::{self, Kernel};
use embjob::backend::gpu::GemmKernel;
use embjob::backend::ops::*;
use embjob::backend::{Activation, MatDims};
use sha2::Digest;

use crate::backend_ops::{assert_close, poison, random};

/// Every kernel source, in both forms (as measured on hardware GPUs, compact for software adapters), with the naga
/// capabilities it needs (f16, cooperative matrices).
fn kernel_sources() -> Vec<(String, String, naga::valid::Capabilities)> {
    let mut files: Vec<(&str, naga::valid::Capabilities)> = Kernel::ALL
        .iter()
        .map(|k| {
            let spec = k.spec();
            let mut caps = naga::valid::Capabilities::empty();
            if spec.f16 {
                caps |= naga::valid::Capabilities::SHADER_FLOAT16;
            }
            if spec.coop {
                caps |= naga::valid::Capabilities::COOPERATIVE_MATRIX;
            }
            (spec.file, caps)
        })
        .collect();
    files.dedup_by_key(|f| f.0);
    let mut out = Vec::new();
    for (file, caps) in files {
        for form in [Form::Measured, Form::Compact] {
            let src = kernels::source(file, form).unwrap_or_else(|e| panic!("{file}: {e}")).into_owned();
            out.push((format!("{file} ({form:?})"), src, caps));
        }
    }
    out
}

/// `module` validated with `caps`, its override constants set (`tb`: the TB of the GEMM kernels, when they have
/// it), and written as SPIR-V (the form wgpu hands a Vulkan driver), as words.
fn spirv(name: &str, module: &naga::Module, caps: naga::valid::Capabilities, tb: bool) -> Vec<u32> {
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(module)
        .unwrap_or_else(|e| panic!("{name} does not validate: {e:?}"));
    let mut constants = naga::back::PipelineConstants::default();
    if module.overrides.iter().any(|(_, o)| o.name.as_deref() == Some("TB")) {
        constants.insert("TB".to_owned(), f64::from(u8::from(tb)));
    }
    let (module, info) = naga::back::pipeline_constants::process_overrides(module, &info, None, &constants)
        .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
    let options = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
    naga::back::spv::write_vec(&module, &info, &options, None).unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"))
}

fn parse(name: &str, src: &str) -> naga::Module {
    naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(src)))
}

#[test]
fn every_kernel_validates_with_naga() {
    let sources = kernel_sources();
    assert!(sources.len() >= 20);
    for (name, src, caps) in &sources {
        let module = parse(name, src);
        for tb in [false, true] {
            assert!(spirv(name, &module, *caps, tb).len() > 5, "{name}: no SPIR-V");
        }
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
fn the_tensor_core_kernel_validates_into_spirv_with_cooperative_matrices() {
    // Every `cargo test`, on any machine: gemm_coop.wgsl parses, validates only with the cooperative-matrix and f16
    // capabilities, and becomes SPIR-V declaring CooperativeMatrixKHR (capability 6022) and Float16 (9).
    let src = kernels::source("gemm_coop", Form::Measured).expect("source");
    let module = parse("gemm_coop", &src);
    let mut plain =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty());
    assert!(plain.validate(&module).is_err(), "cooperative matrices need their capability");
    let caps = naga::valid::Capabilities::COOPERATIVE_MATRIX | naga::valid::Capabilities::SHADER_FLOAT16;
    // Both layouts of B: K×N, and N×K as a Linear layer stores its weight.
    for tb in [false, true] {
        let words = spirv("gemm_coop", &module, caps, tb);
        // OpCapability is opcode 17, two words: (2 << 16) | 17, then the capability.
        let capabilities: Vec<u32> = words.windows(2).filter(|w| w[0] == (2 << 16) | 17).map(|w| w[1]).collect();
        assert!(capabilities.contains(&6022), "TB={tb}: no CooperativeMatrixKHR capability: {capabilities:?}");
        assert!(capabilities.contains(&9), "TB={tb}: no Float16 capability: {capabilities:?}");
    }
    let spec = Kernel::GemmCoop.spec();
    assert!(spec.coop && spec.f16 && !spec.trusted, "the tensor-core kernel runs with bounds checks");
    assert!(Kernel::GemmF16.spec().trusted, "gemm_f16 has gemm's clamped loads and guarded stores");
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
fn gpu() -> Option<&'static embjob::backend::gpu::Gpu> {
    crate::support::gpu_backend()
}

#[test]
fn every_gemm_kernel_with_every_transpose_equals_cpu() {
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
                let (a, b, c0, bias) =
                    (random(1, m * k, 1.0), random(2, k * n, 1.0), random(3, m * n, 1.0), random(4, n, 3.0));
                let d = MatDims { m, n, k };
                let what = format!("{kernel:?} gemm {m}×{n}×{k} ta={ta} tb={tb}");
                let act = acts[(s + t) % acts.len()];
                let (ga, gb, gbias) =
                    (g.tensor(&a).expect("a"), g.tensor(&b).expect("b"), g.tensor(&bias).expect("bias"));
                for (beta, epilogue) in [(0.0f32, false), (0.5, false), (0.5, true)] {
                    let mut want = c0.clone();
                    cpu::matmul(&a, ta, &b, tb, &mut want, d, beta).expect("cpu matmul");
                    if epilogue {
                        cpu::bias_act(&mut want, &bias, n, act);
                    }
                    let start = if beta == 0.0 { poison(m * n) } else { c0.clone() };
                    let c = g.tensor(&start).expect("c");
                    let run = || {
                        let bias = epilogue.then_some((&gbias, act));
                        g.matmul_using(kernel, (&ga, ta), (&gb, tb), &c, d, beta, bias).expect("gemm");
                        g.read(&c).expect("read")
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
    // A shape its operands do not hold is refused on every kernel, the overflowing ones too.
    let (a, c) = (g.tensor(&[1.0; 6]).expect("a"), g.tensor(&[0.0; 4]).expect("c"));
    for kernel in [GemmKernel::Register, GemmKernel::Tiled, GemmKernel::Tiled128] {
        for d in [MatDims { m: 3, n: 2, k: 3 }, MatDims { m: 1 << 33, n: 1, k: 1 << 31 }] {
            let b = g.tensor(&[1.0; 6]).expect("b");
            assert!(g.matmul_using(kernel, (&a, false), (&b, false), &c, d, 0.0, None).is_err(), "{kernel:?} {d:?}");
        }
    }
}

#[test]
fn the_f16_kernels_equal_their_cpu_twin() {
    // The f16 path's products: B stored in f16, A rounded to f16 as it is read, sums in f32, against the CPU twin
    // (the same rounding, then the f32 product). gemm_f16 wherever the adapter has f16 shaders (lavapipe has);
    // the tensor-core kernel where the adapter has cooperative matrices and it passed its check against gemm_f16.
    let Some(g) = gpu() else { return };
    let mut kernels = Vec::new();
    match g.tensor_f16(&[1.0]) {
        Ok(_) => kernels.push(GemmKernel::F16),
        Err(e) => {
            crate::support::skip_unless_required("EMBJOB_REQUIRE_F16", &format!("no f16 shaders here: {e}"));
            return;
        }
    }
    match g.tensor_cores().expect("tensor-core state") {
        Ok(()) => kernels.push(GemmKernel::TensorCores),
        Err(why) => eprintln!("tensor cores not tested here: {why}"),
    }
    let acts = [Activation::Identity, Activation::Gelu, Activation::GeluTanh];
    for kernel in kernels {
        // The last shape splits k (gemm_f16; the tensor-core kernel never splits).
        for (s, (m, n, k)) in
            [(1, 1, 1), (7, 5, 3), (65, 70, 33), (130, 96, 300), (37, 29, 3000)].into_iter().enumerate()
        {
            let transposes: &[(bool, bool)] = if kernel == GemmKernel::TensorCores {
                &[(false, false), (false, true)]
            } else {
                &[(false, false), (true, false), (false, true), (true, true)]
            };
            for &(ta, tb) in transposes {
                let (a, b, bias) = (random(11, m * k, 1.5), random(12, k * n, 1.0), random(13, n, 2.0));
                let d = MatDims { m, n, k };
                let act = acts[s % acts.len()];
                let mut want = vec![0.0; m * n];
                cpu::matmul_f16_inputs(&a, ta, &b, tb, &mut want, d, 0.0).expect("cpu twin");
                cpu::bias_act(&mut want, &bias, n, act);
                let (ga, gb, gbias) =
                    (g.tensor(&a).expect("a"), g.tensor_f16(&b).expect("f16 b"), g.tensor(&bias).expect("bias"));
                let c = g.tensor(&poison(m * n)).expect("c");
                g.matmul_using(kernel, (&ga, ta), (&gb, tb), &c, d, 0.0, Some((&gbias, act))).expect("gemm");
                let got = g.read(&c).expect("read");
                assert_close(&got, &want, &format!("{kernel:?} {m}×{n}×{k} ta={ta} tb={tb} {act:?}"));
                // Through the trait: a product whose B is f16 takes the f16 path by itself.
                let c2 = g.tensor(&poison(m * n)).expect("c");
                if !ta || kernel == GemmKernel::F16 {
                    g.matmul_bias_act(&ga, ta, &gb, tb, &c2, d, &gbias, act).expect("matmul_bias_act");
                    assert_close(&g.read(&c2).expect("read"), &want, "the f16 path through ModelOps");
                }
            }
        }
    }
    // An f16 tensor is only a product's B: anywhere else it is refused, and an f32 kernel refuses an f16 B.
    let (x, h) = (g.tensor(&[1.0; 6]).expect("x"), g.tensor_f16(&[1.0; 6]).expect("h"));
    assert!(g.bias_act(&h, &x, 2, 3, Activation::Relu).is_err(), "bias_act on an f16 tensor");
    let c = g.tensor(&[0.0; 4]).expect("c");
    let d = MatDims { m: 2, n: 2, k: 3 };
    assert!(g.matmul_using(GemmKernel::Register, (&x, false), (&h, false), &c, d, 0.0, None).is_err());
    assert!(g.matmul_using(GemmKernel::F16, (&h, false), (&h, false), &c, d, 0.0, None).is_err(), "an f16 A");
    assert_eq!(g.read(&h).expect("read f16"), vec![1.0; 6], "an f16 tensor reads back as f32");
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
fn a_tensor_over_the_adapter_limit_is_a_clear_error_before_anything_is_allocated() {
    // On every adapter, whatever its limit: zeros and index buffers are checked before the device or the host
    // allocates them, so a tensor just over the limit costs nothing to refuse.
    let Some(g) = gpu() else { return };
    let too_many = usize::try_from(g.binding_limit() / 4 + 1).expect("fits usize");
    for e in [g.zeros(too_many).err(), g.index_buffer(too_many).err()] {
        let e = e.expect("over the limit");
        assert!(e.to_string().contains("max_storage_buffer_binding_size"), "{e}");
        assert_eq!(e.exit_code(), 4);
    }
    // A length whose bytes overflow is over every limit (not wrapped below it).
    assert!(g.zeros(usize::MAX / 2).is_err());
    assert!(g.zeros(too_many - 1).is_ok() || too_many - 1 > 1 << 28, "just under the limit fits");
}

#[test]
fn a_model_too_large_for_the_adapter_stops_with_the_tensor_and_the_limit() {
    // The logits (batch × items floats) just over this adapter's binding limit, whatever it is: refused when they
    // are created, with the tensor and the limit named, before the device or the host allocates them.
    let Some(g) = gpu() else { return };
    let limit = g.binding_limit();
    let items = 4100usize;
    let batch = usize::try_from(limit / 4).expect("fits usize") / items + 1;
    assert!(batch <= 1 << 20, "train.batch_size allows {batch} (limit {limit} bytes)");
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
        .env("EMBJOB_SHADER_DIR", job.path("kernels"))
        .output()
        .expect("run embjob");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("EMBJOB_SHADER_DIR") && stderr.contains("kernel-dev"), "{stderr}");
    job.assert_no_run();
}
