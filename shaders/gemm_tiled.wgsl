// gemm_tiled.wgsl: C = op(A)·op(B) + beta·C, as gemm.wgsl (same parameters, bindings, dispatch and split-k slices;
// its `reduce_splits` adds the slices), with workgroup-memory tiles: per step of 16 along k, the 256 invocations of a
// 16×16 workgroup load a 16×64 tile of A and of B once (zeros past the edges), then each accumulates its 4×4 block
// of C (rows y + 16i, columns x + 16j) from workgroup memory. Used on hardware GPUs for products under 2^30
// multiply-adds (more workgroups than gemm_tiled128.wgsl; H200, 8192³: 25.0 TFLOP/s vs 14.7 for the register-only
// kernel); software adapters keep gemm.wgsl. Sums run over k in order, so results repeat bit for bit.
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

//#include gemm_tile_main TILE=64 ACC=4
        // 256 threads load 16×64 of A and of B, 4 values each (zeros past the edges).
//#include gemm_tile_load TILE=64 LOADS=4
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            let av = vec4<f32>(tile_a[kk][lid.y], tile_a[kk][lid.y + 16u], tile_a[kk][lid.y + 32u], tile_a[kk][lid.y + 48u]);
            let bv = vec4<f32>(tile_b[kk][lid.x], tile_b[kk][lid.x + 16u], tile_b[kk][lid.x + 32u], tile_b[kk][lid.x + 48u]);
            acc[0] = acc[0] + av.x * bv;
            acc[1] = acc[1] + av.y * bv;
            acc[2] = acc[2] + av.z * bv;
            acc[3] = acc[3] + av.w * bv;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let row = row_base + lid.y + 16u * i;
        if (row < p.m) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                let col = col_base + lid.x + 16u * j;
                if (col < p.n) {
                    let at = slice + row * p.n + col;
                    var v = acc[i][j];
                    if (p.splits == 1u && p.beta != 0.0) {
                        v = v + p.beta * c[at];
                    }
                    c[at] = epilogue(v, col);
                }
            }
        }
    }
}

//#include gemm_epilogue
//#include activation
