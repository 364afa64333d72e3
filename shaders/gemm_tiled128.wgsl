// gemm_tiled128.wgsl: C = op(A)·op(B) + beta·C, as gemm.wgsl (same parameters, bindings and split-k slices; its
// `reduce_splits` adds the slices), for large products on hardware GPUs: a 16×16 workgroup covers 128×128 of C, each
// invocation 8×8 (rows y + 16i, columns x + 16j) in registers; per step of 16 along k the workgroup loads a 16×128
// tile of A and of B into workgroup memory (zeros past the edges). The write-back uses constant indices only, so
// the accumulators stay in registers. Dispatch (ceil(n / TILE), ceil(m / TILE), splits): the host reads TILE below.
// H200, Vulkan: 28.2 TFLOP/s at 4096³ and 30.4 at 8192³ (cuBLAS FP32 50.6 / 50.8); smaller products go to
// gemm_tiled.wgsl (more workgroups). Sums run over k in order, so results repeat bit for bit.
//
// Bindings (group 0):
//   0  uniform        GemmParams
//   1  storage, read  a: array<f32>
//   2  storage, read  b: array<f32>
//   3  storage, rw    c: array<f32>   (C, or the slices when split; read only when beta != 0 and not split)
//   5  storage, read  bias: array<f32>   (the epilogue's bias: see gemm_epilogue.wgsl)

//#include gemm_params B=f32

// Which operands are transposed: fixed per pipeline (one pipeline per combination).
override TA: bool = false;
override TB: bool = false;

const TILE: u32 = 128u;

//#include gemm_tile_main TILE=128 ACC=16
//#include gemm_tile_load TILE=128 LOADS=8
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            let a0 = tile_a[kk][lid.y + 0u];
            let a1 = tile_a[kk][lid.y + 16u];
            let a2 = tile_a[kk][lid.y + 32u];
            let a3 = tile_a[kk][lid.y + 48u];
            let a4 = tile_a[kk][lid.y + 64u];
            let a5 = tile_a[kk][lid.y + 80u];
            let a6 = tile_a[kk][lid.y + 96u];
            let a7 = tile_a[kk][lid.y + 112u];
            let b0 = vec4<f32>(tile_b[kk][lid.x], tile_b[kk][lid.x + 16u], tile_b[kk][lid.x + 32u], tile_b[kk][lid.x + 48u]);
            let b1 = vec4<f32>(tile_b[kk][lid.x + 64u], tile_b[kk][lid.x + 80u], tile_b[kk][lid.x + 96u], tile_b[kk][lid.x + 112u]);
            acc[0] = acc[0] + a0 * b0;
            acc[1] = acc[1] + a0 * b1;
            acc[2] = acc[2] + a1 * b0;
            acc[3] = acc[3] + a1 * b1;
            acc[4] = acc[4] + a2 * b0;
            acc[5] = acc[5] + a2 * b1;
            acc[6] = acc[6] + a3 * b0;
            acc[7] = acc[7] + a3 * b1;
            acc[8] = acc[8] + a4 * b0;
            acc[9] = acc[9] + a4 * b1;
            acc[10] = acc[10] + a5 * b0;
            acc[11] = acc[11] + a5 * b1;
            acc[12] = acc[12] + a6 * b0;
            acc[13] = acc[13] + a6 * b1;
            acc[14] = acc[14] + a7 * b0;
            acc[15] = acc[15] + a7 * b1;
        }
        workgroupBarrier();
    }
    // Written back with constant indices only, so that acc stays in registers.
//#generate store_8x8
}

//#include gemm_epilogue
//#include activation
