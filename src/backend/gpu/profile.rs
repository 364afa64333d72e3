//! Kernel timing with GPU timestamp queries, for tuning: `EMBJOB_GPU_PROFILE=1` records the start and end of every
//! dispatch on adapters that offer `TIMESTAMP_QUERY`, reads them back at each submit (which serialises the queue:
//! profiled runs are slower overall, the per-kernel times are what counts) and sums them per kernel and shape.
//! `embjob bench train` prints the table.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Mutex;

/// Dispatches timed per submit at most (two timestamps each); further ones in the same submit go untimed.
const CAPACITY: u32 = 1024;

pub struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Labels of the dispatches recorded since the last submit, in query order.
    pending: Vec<String>,
    /// Per label: calls and total nanoseconds.
    totals: BTreeMap<String, (u64, f64)>,
    untimed: u64,
}

impl Profiler {
    /// A profiler when `EMBJOB_GPU_PROFILE` is set and the device has timestamp queries.
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Option<Profiler> {
        if std::env::var_os("EMBJOB_GPU_PROFILE").is_none()
            || !device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return None;
        }
        let bytes = u64::from(CAPACITY) * 2 * 8;
        Some(Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: CAPACITY * 2,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            period_ns: f64::from(queue.get_timestamp_period()),
            state: Mutex::default(),
        })
    }

    /// The timestamp writes for the next dispatch, labelled `label` (built only when profiling).
    pub fn next(&self, label: impl FnOnce() -> String) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let mut st = self.state.lock().ok()?;
        let i = st.pending.len() as u32;
        if i >= CAPACITY {
            st.untimed += 1;
            return None;
        }
        st.pending.push(label());
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Submits `enc` with the pending timestamps resolved into it, waits, and adds the durations to the totals.
    pub fn submit(&self, device: &wgpu::Device, queue: &wgpu::Queue, mut enc: wgpu::CommandEncoder) {
        let Ok(mut st) = self.state.lock() else {
            queue.submit([enc.finish()]);
            return;
        };
        let n = st.pending.len() as u32;
        if n == 0 {
            queue.submit([enc.finish()]);
            return;
        }
        enc.resolve_query_set(&self.queries, 0..2 * n, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, u64::from(n) * 16);
        queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        self.readback.map_async(wgpu::MapMode::Read, ..u64::from(n) * 16, move |r| {
            let _ = tx.send(r);
        });
        let _ = device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None });
        let labels = std::mem::take(&mut st.pending);
        if let Ok(Ok(())) = rx.recv() {
            if let Ok(view) = self.readback.get_mapped_range(..u64::from(n) * 16) {
                let ticks: &[u64] = bytemuck::cast_slice(&view);
                for (i, label) in labels.into_iter().enumerate() {
                    let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * self.period_ns;
                    let e = st.totals.entry(label).or_insert((0, 0.0));
                    e.0 += 1;
                    e.1 += ns;
                }
            }
            self.readback.unmap();
        }
    }

    /// The totals so far as a Markdown table (largest first), then cleared.
    pub fn report(&self) -> String {
        let Ok(mut st) = self.state.lock() else { return String::new() };
        let total: f64 = st.totals.values().map(|v| v.1).sum();
        let mut rows: Vec<_> = std::mem::take(&mut st.totals).into_iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let mut s = String::from("| kernel | calls | total ms | mean µs | share |\n|---|---|---|---|---|\n");
        for (label, (calls, ns)) in rows {
            s.push_str(&format!(
                "| {label} | {calls} | {:.2} | {:.1} | {:.1} % |\n",
                ns / 1e6,
                ns / 1e3 / calls as f64,
                100.0 * ns / total.max(1.0)
            ));
        }
        s.push_str(&format!("| all timed kernels | | {:.2} | | |\n", total / 1e6));
        if st.untimed > 0 {
            s.push_str(&format!("({} dispatches went untimed: over {CAPACITY} in one submit)\n", st.untimed));
            st.untimed = 0;
        }
        s
    }
}
