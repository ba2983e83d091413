//! An op-level time profile, on when the environment variable `EMBER_PROFILE` is set: where a
//! training step's time goes, op by op, forward and backward.
//!
//! Forward: the time since the previous recorded op on this thread is charged to the op being
//! recorded (ops record their backward right after computing), so glue between ops counts too.
//! Backward: each node's closure is timed, and the summing of gradients apart.
//! On a CUDA device, each mark first waits for the device's queued work
//! ([`crate::cuda::synchronize_opened`]), so a kernel's time is charged to the op that
//! launched it (and the profiled step runs without overlap between host and device).
//! Ops with several algorithms (the convolution) also count which one each call ran
//! ([`count_choice`]). [`report`] prints the tables (and resets them).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("EMBER_PROFILE").is_some())
}

#[derive(Default)]
struct Totals {
    by_key: HashMap<(&'static str, &'static str), (Duration, usize)>,
    last_mark: Option<Instant>,
    /// (op, pass, algorithm, geometry) → calls: the algorithms the ops chose ([`count_choice`]).
    choices: HashMap<(&'static str, &'static str, &'static str, String), usize>,
}

fn totals() -> &'static Mutex<Totals> {
    static TOTALS: OnceLock<Mutex<Totals>> = OnceLock::new();
    TOTALS.get_or_init(Default::default)
}

/// Charges the time since the last mark to (`phase`, `op`) and sets the mark to now.
pub fn mark(phase: &'static str, op: &'static str) {
    if !enabled() {
        return;
    }
    // an asynchronous device error surfaces again at the next synchronizing call
    let _ = crate::cuda::synchronize_opened();
    let now = Instant::now();
    let mut t = totals().lock().unwrap();
    if let Some(last) = t.last_mark {
        let entry = t.by_key.entry((phase, op)).or_default();
        entry.0 += now - last;
        entry.1 += 1;
    }
    t.last_mark = Some(now);
}

thread_local! {
    static IN_BACKWARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Charges an op's forward computation ([`mark`] with phase "forward"), with or without a
/// graph, except while a backward pass runs on this thread: the ops a node's backward calls
/// are charged to that node.
pub fn mark_forward(op: &'static str) {
    if enabled() && !IN_BACKWARD.get() {
        mark("forward", op);
    }
}

/// While alive, [`mark_forward`] charges nothing on this thread (see there).
pub(crate) struct BackwardScope(());

impl BackwardScope {
    pub(crate) fn enter() -> BackwardScope {
        IN_BACKWARD.set(true);
        BackwardScope(())
    }
}

impl Drop for BackwardScope {
    fn drop(&mut self) {
        IN_BACKWARD.set(false);
    }
}

/// Sets the mark to now without charging anything (the start of a region).
pub fn reset_mark() {
    if enabled() {
        let _ = crate::cuda::synchronize_opened();
        totals().lock().unwrap().last_mark = Some(Instant::now());
    }
}

/// Counts that `op`'s `pass` ran `algorithm` on the geometry `describe()` gives (a
/// convolution's road, say); [`report`] lists the counts under the time table.
pub fn count_choice(op: &'static str, pass: &'static str, algorithm: &'static str, describe: impl FnOnce() -> String) {
    if enabled() {
        *totals().lock().unwrap().choices.entry((op, pass, algorithm, describe())).or_default() += 1;
    }
}

/// Forgets the profile so far (a warm-up's, say).
pub fn clear() {
    if enabled() {
        let mut t = totals().lock().unwrap();
        t.by_key.clear();
        t.choices.clear();
    }
}

/// Prints the profile so far, largest first, and clears it.
pub fn report() {
    if !enabled() {
        return;
    }
    let mut t = totals().lock().unwrap();
    let mut rows: Vec<_> = t.by_key.drain().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.0));
    let total: Duration = rows.iter().map(|r| r.1.0).sum();
    eprintln!("{:<10} {:<24} {:>10} {:>7} {:>8}", "phase", "op", "ms", "%", "calls");
    for ((phase, op), (time, calls)) in rows {
        eprintln!("{phase:<10} {op:<24} {:>10.1} {:>6.1}% {calls:>8}", time.as_secs_f64() * 1e3, 100.0 * time.as_secs_f64() / total.as_secs_f64());
    }
    eprintln!("total {:.1} ms", total.as_secs_f64() * 1e3);
    let mut choices: Vec<_> = t.choices.drain().collect();
    if !choices.is_empty() {
        choices.sort();
        eprintln!("\n{:<10} {:<16} {:<22} {:<34} {:>6}", "op", "pass", "algorithm", "geometry", "calls");
        for ((op, pass, algorithm, geometry), calls) in choices {
            eprintln!("{op:<10} {pass:<16} {algorithm:<22} {geometry:<34} {calls:>6}");
        }
    }
}
