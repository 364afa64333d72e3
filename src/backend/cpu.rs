//! The CPU backend: the reference every other backend is tested against, and what runs where no GPU exists.
//! Dense products go through `matrixmultiply`; sparse products are row-parallel with rayon and sum in a fixed order,
//! so results do not depend on the thread count.

use std::sync::{Mutex, MutexGuard};

use rayon::prelude::*;

use super::cpu_kernels as k;
use super::{AdamStep, Backend, Bags, Indices, MatDims, Tensor};
use crate::dense::Matrix;
use crate::error::{Error, Result};
use crate::sparse::Csr;

/// The CPU backend. Its resident tensors are host vectors.
#[derive(Debug, Default)]
pub struct Cpu {
    store: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    f: Vec<Vec<f32>>,
    u: Vec<Vec<u32>>,
}

impl Cpu {
    pub fn new() -> Cpu {
        Cpu::default()
    }

    fn store(&self) -> Result<MutexGuard<'_, Store>> {
        self.store.lock().map_err(|_| Error::Internal("cpu backend: tensor store poisoned by a panic".into()))
    }
}

impl Store {
    fn f(&self, t: Tensor) -> Result<&[f32]> {
        self.f.get(t.id).map(Vec::as_slice).ok_or_else(|| Error::Internal(format!("cpu backend: no tensor {}", t.id)))
    }
    fn u(&self, t: Indices) -> Result<&[u32]> {
        self.u
            .get(t.id)
            .map(|v| &v[..t.len.min(v.len())])
            .ok_or_else(|| Error::Internal(format!("cpu backend: no index buffer {}", t.id)))
    }
    /// Takes a tensor out of the store so it can be written while others are read; `put` returns it.
    fn take(&mut self, t: Tensor) -> Result<Vec<f32>> {
        self.f
            .get_mut(t.id)
            .map(std::mem::take)
            .ok_or_else(|| Error::Internal(format!("cpu backend: no tensor {}", t.id)))
    }
    fn put(&mut self, t: Tensor, v: Vec<f32>) {
        self.f[t.id] = v;
    }
}

/// Runs `f` with tensor `out` taken out of the store for writing and the store readable.
fn with_out<R>(store: &mut Store, out: Tensor, f: impl FnOnce(&Store, &mut [f32]) -> Result<R>) -> Result<R> {
    let mut v = store.take(out)?;
    let r = f(store, &mut v);
    store.put(out, v);
    r
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn gemm(&self, a: &Matrix, ta: bool, b: &Matrix, tb: bool) -> Result<Matrix> {
        let (m, k) = if ta { (a.cols(), a.rows()) } else { (a.rows(), a.cols()) };
        let (k2, n) = if tb { (b.cols(), b.rows()) } else { (b.rows(), b.cols()) };
        super::check_dims("gemm", k, k2)?;
        let mut c = Matrix::zeros(m, n);
        // Row-major strides; a transpose is the same buffer with its strides swapped.
        let (rsa, csa) = if ta { (1, a.cols() as isize) } else { (a.cols() as isize, 1) };
        let (rsb, csb) = if tb { (1, b.cols() as isize) } else { (b.cols() as isize, 1) };
        if a.data().len() != m * k || b.data().len() != k * n || c.data().len() != m * n {
            return Err(Error::Internal("gemm: an operand's buffer does not hold its shape".into()));
        }
        if m > 0 && n > 0 && k > 0 {
            // SAFETY: the pointers and strides describe the m×k, k×n and m×n matrices held by `a`, `b` and `c`.
            // A `Matrix` always holds rows × cols values (private fields, checked constructors: src/dense.rs), the
            // inner dimensions are checked above and `c` was made m×n here; the lengths are checked once more.
            unsafe {
                matrixmultiply::dgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.data().as_ptr(),
                    rsa,
                    csa,
                    b.data().as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    c.data_mut().as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
        Ok(c)
    }

    fn gram_csr(&self, x: &Csr) -> Result<Matrix> {
        // Each thread owns a block of output rows a and scans every input row for entries in its block: no
        // shared writes, and each output sums over input rows in row order.
        let p = x.cols;
        let mut out = Matrix::zeros(p, p);
        let block = p.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
        out.data_mut().par_chunks_mut(block * p).enumerate().for_each(|(bi, chunk)| {
            let lo = bi * block;
            let hi = (lo + block).min(p);
            for r in 0..x.rows {
                let (idx, val) = x.row(r);
                let start = idx.partition_point(|&c| (c as usize) < lo);
                for i in start..idx.len() {
                    let a = idx[i] as usize;
                    if a >= hi {
                        break;
                    }
                    let va = val[i];
                    let row = &mut chunk[(a - lo) * p..(a - lo + 1) * p];
                    for (&b, &vb) in idx.iter().zip(val) {
                        row[b as usize] += va * vb;
                    }
                }
            }
        });
        Ok(out)
    }

    fn outer_csr(&self, x: &Csr) -> Result<Matrix> {
        // Row i scattered into a dense vector, then gathered against every row j ≤ i; mirrored afterwards.
        let n = x.rows;
        let mut out = Matrix::zeros(n, n);
        out.data_mut().par_chunks_mut(n.max(1)).enumerate().for_each_init(
            || vec![0.0f64; x.cols],
            |dense, (i, row)| {
                let (ia, va) = x.row(i);
                for (&c, &v) in ia.iter().zip(va) {
                    dense[c as usize] = v;
                }
                for (j, slot) in row.iter_mut().enumerate().take(i + 1) {
                    let (ib, vb) = x.row(j);
                    *slot = ib.iter().zip(vb).map(|(&c, &v)| dense[c as usize] * v).sum();
                }
                for &c in ia {
                    dense[c as usize] = 0.0;
                }
            },
        );
        for i in 0..n {
            for j in i + 1..n {
                out.data_mut()[i * n + j] = out.data()[j * n + i];
            }
        }
        Ok(out)
    }

    fn csr_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        super::check_dims("csr_mul", x.cols, b.rows())?;
        Ok(csr_times_dense(x, b))
    }

    fn csr_t_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        super::check_dims("csr_t_mul", x.rows, b.rows())?;
        // Each thread owns a block of output rows (columns of X) and scans every row of X for entries in its
        // block: no transpose, no shared writes, and every output sums over X's rows in order.
        let (p, k) = (x.cols, b.cols());
        let mut out = Matrix::zeros(p, k);
        let block = p.div_ceil(rayon::current_num_threads().max(1) * 2).max(1);
        out.data_mut().par_chunks_mut((block * k).max(1)).enumerate().for_each(|(bi, chunk)| {
            let lo = bi * block;
            let hi = (lo + block).min(p);
            for r in 0..x.rows {
                let (idx, val) = x.row(r);
                let start = idx.partition_point(|&c| (c as usize) < lo);
                let brow = b.row(r);
                for (&c, &v) in idx[start..].iter().zip(&val[start..]) {
                    let c = c as usize;
                    if c >= hi {
                        break;
                    }
                    k::axpy_f64(&mut chunk[(c - lo) * k..(c - lo + 1) * k], v, brow);
                }
            }
        });
        Ok(out)
    }

    fn tensor(&self, data: &[f32]) -> Result<Tensor> {
        let mut s = self.store()?;
        s.f.push(data.to_vec());
        Ok(Tensor { id: s.f.len() - 1, len: data.len() })
    }

    fn write(&self, t: Tensor, data: &[f32]) -> Result<()> {
        let mut s = self.store()?;
        let v = s.f.get_mut(t.id).ok_or_else(|| Error::Internal(format!("cpu backend: no tensor {}", t.id)))?;
        if v.len() < data.len() {
            return Err(Error::Internal(format!("cpu backend: write of {} values into {}", data.len(), v.len())));
        }
        v[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, t: Tensor) -> Result<Vec<f32>> {
        Ok(self.store()?.f(t)?.to_vec())
    }

    fn index_buffer(&self, capacity: usize) -> Result<Indices> {
        let mut s = self.store()?;
        s.u.push(vec![0; capacity]);
        Ok(Indices { id: s.u.len() - 1, len: 0 })
    }

    fn write_indices(&self, t: Indices, data: &[u32]) -> Result<Indices> {
        let mut s = self.store()?;
        let v = s.u.get_mut(t.id).ok_or_else(|| Error::Internal(format!("cpu backend: no index buffer {}", t.id)))?;
        if data.len() > v.len() {
            return Err(Error::Internal(format!("cpu backend: {} indices into a buffer of {}", data.len(), v.len())));
        }
        v[..data.len()].copy_from_slice(data);
        Ok(Indices { id: t.id, len: data.len() })
    }

    fn copy(&self, src: Tensor, src_offset: usize, dst: Tensor, dst_offset: usize, len: usize) -> Result<()> {
        let mut s = self.store()?;
        with_out(&mut s, dst, |s, out| {
            let from = s
                .f(src)?
                .get(src_offset..src_offset + len)
                .ok_or_else(|| Error::Internal("copy: source range".into()))?;
            out.get_mut(dst_offset..dst_offset + len)
                .ok_or_else(|| Error::Internal("copy: destination range".into()))?
                .copy_from_slice(from);
            Ok(())
        })
    }

    fn matmul(&self, a: Tensor, ta: bool, b: Tensor, tb: bool, c: Tensor, dims: MatDims, beta: f32) -> Result<()> {
        let mut s = self.store()?;
        with_out(&mut s, c, |s, out| {
            k::matmul(s.f(a)?, ta, s.f(b)?, tb, out, dims, beta);
            Ok(())
        })
    }

    fn embedding_bag(&self, table: Tensor, dim: usize, bags: &Bags, mean: bool, out: Tensor) -> Result<()> {
        let mut s = self.store()?;
        with_out(&mut s, out, |s, out| {
            k::embedding_bag(
                s.f(table)?,
                dim,
                s.u(bags.items)?,
                s.u(bags.offsets)?,
                s.f(bags.weights)?,
                mean,
                &mut out[..bags.bags * dim],
            );
            Ok(())
        })
    }

    fn embedding_bag_backward(
        &self,
        d_pooled: Tensor,
        dim: usize,
        bags: &Bags,
        mean: bool,
        grad: Tensor,
    ) -> Result<()> {
        let mut s = self.store()?;
        with_out(&mut s, grad, |s, out| {
            k::embedding_bag_backward(
                s.f(d_pooled)?,
                dim,
                s.u(bags.offsets)?,
                s.f(bags.weights)?,
                s.u(bags.seg_items)?,
                s.u(bags.seg_offsets)?,
                s.u(bags.seg_examples)?,
                s.f(bags.seg_weights)?,
                mean,
                out,
            );
            Ok(())
        })
    }

    fn bias_act(&self, x: Tensor, bias: Tensor, rows: usize, cols: usize, relu: bool) -> Result<()> {
        let mut s = self.store()?;
        with_out(&mut s, x, |s, out| {
            k::bias_act(&mut out[..rows * cols], s.f(bias)?, cols, relu);
            Ok(())
        })
    }

    fn relu_backward(&self, grad: Tensor, activation: Tensor) -> Result<()> {
        let mut s = self.store()?;
        with_out(&mut s, grad, |s, out| {
            k::relu_backward(out, s.f(activation)?);
            Ok(())
        })
    }

    fn column_sums(&self, x: Tensor, rows: usize, cols: usize, out: Tensor) -> Result<()> {
        let mut s = self.store()?;
        with_out(&mut s, out, |s, out| {
            k::column_sums(s.f(x)?, rows, cols, out);
            Ok(())
        })
    }

    fn softmax_xent(&self, logits: Tensor, targets: Indices, rows: usize, cols: usize, losses: Tensor) -> Result<()> {
        let mut s = self.store()?;
        let mut l = s.take(losses)?;
        let r = with_out(&mut s, logits, |s, out| {
            k::softmax_xent(&mut out[..rows * cols], s.u(targets)?, cols, &mut l[..rows]);
            Ok(())
        });
        s.put(losses, l);
        r
    }

    fn adam(&self, param: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: AdamStep) -> Result<()> {
        let mut s = self.store()?;
        let (mut pm, mut mm, mut vm) = (s.take(param)?, s.take(m)?, s.take(v)?);
        let r = s.f(grad).map(|g| k::adam(&mut pm, g, &mut mm, &mut vm, step));
        s.put(param, pm);
        s.put(m, mm);
        s.put(v, vm);
        r
    }

    fn sgd(
        &self,
        param: Tensor,
        grad: Tensor,
        velocity: Tensor,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<()> {
        let mut s = self.store()?;
        let (mut pm, mut vm) = (s.take(param)?, s.take(velocity)?);
        let r = s.f(grad).map(|g| k::sgd(&mut pm, g, &mut vm, lr, momentum, weight_decay));
        s.put(param, pm);
        s.put(velocity, vm);
        r
    }

    fn target_ranks(
        &self,
        scores: Tensor,
        rows: usize,
        cols: usize,
        targets: Indices,
        mask_items: Indices,
        mask_offsets: Indices,
        ranks: Tensor,
    ) -> Result<()> {
        let mut s = self.store()?;
        with_out(&mut s, ranks, |s, out| {
            k::target_ranks(s.f(scores)?, cols, s.u(targets)?, s.u(mask_items)?, s.u(mask_offsets)?, &mut out[..rows]);
            Ok(())
        })
    }

    fn cosine_top_k(&self, x: Tensor, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let s = self.store()?;
        Ok(k::cosine_top_k(&s.f(x)?[..n * dim], n, dim, k))
    }
}

fn csr_times_dense(x: &Csr, b: &Matrix) -> Matrix {
    let k = b.cols();
    let mut out = Matrix::zeros(x.rows, k);
    out.data_mut().par_chunks_mut(k.max(1)).enumerate().for_each(|(r, row)| {
        let (idx, val) = x.row(r);
        for (&c, &v) in idx.iter().zip(val) {
            k::axpy_f64(row, v, b.row(c as usize));
        }
    });
    out
}

/// The CSR form of the transpose (a CSC view of `x`), columns ascending within each row.
pub fn transpose(x: &Csr) -> Csr {
    let mut counts = vec![0usize; x.cols + 1];
    for &c in &x.indices {
        counts[c as usize + 1] += 1;
    }
    for i in 0..x.cols {
        counts[i + 1] += counts[i];
    }
    let indptr = counts.clone();
    let mut next = counts;
    let mut indices = vec![0u32; x.nnz()];
    let mut values = vec![0.0; x.nnz()];
    for r in 0..x.rows {
        let (idx, val) = x.row(r);
        for (&c, &v) in idx.iter().zip(val) {
            let at = next[c as usize];
            indices[at] = r as u32;
            values[at] = v;
            next[c as usize] += 1;
        }
    }
    Csr { rows: x.cols, cols: x.rows, indptr, indices, values }
}
