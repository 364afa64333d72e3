// gemm_tile_load.wgsl (fragment, included by gemm_tiled.wgsl and gemm_tiled128.wgsl with
// `//#include gemm_tile_load TILE=… LOADS=…`): the 256 invocations of a 16×16 workgroup load a 16×TILE tile of
// op(A) and of op(B) into workgroup memory, LOADS values each, zeros past the edges and past the k slice.

        for (var q = 0u; q < {{LOADS}}u; q = q + 1u) {
            let e = t + 256u * q;
            var kk: u32;
            var rc: u32;
            if (TA) { kk = e / {{TILE}}u; rc = e % {{TILE}}u; } else { kk = e % 16u; rc = e / 16u; }
            let kg = k0 + kk;
            let row = row_base + rc;
            var va = 0.0;
            if (kg < k_end && row < p.m) {
                if (TA) { va = a[kg * p.m + row]; } else { va = a[row * p.k + kg]; }
            }
            tile_a[kk][rc] = va;
            var kb: u32;
            var cb: u32;
            if (TB) { kb = e % 16u; cb = e / 16u; } else { kb = e / {{TILE}}u; cb = e % {{TILE}}u; }
            let kgb = k0 + kb;
            let col = col_base + cb;
            var vb = 0.0;
            if (kgb < k_end && col < p.n) {
                if (TB) { vb = b[col * p.k + kgb]; } else { vb = b[kgb * p.n + col]; }
            }
            tile_b[kb][cb] = vb;
        }
