//! A small team of spinning helper threads for batch-1 latency.
//!
//! At batch 1 a ResNet-20 conv takes ~40 µs. Splitting it over two cores
//! with rayon lost time instead of saving it: waking a sleeping worker on
//! these VMs costs tens of µs (measured: 0.82 → 1.2 ms per image). ONNX
//! Runtime keeps its workers spinning between ops; so does this team, for a
//! short while after each job (then they sleep, so an idle program does not
//! burn a core).
//!
//! `run(parts, f)` calls `f(0..parts)` across the caller and the helpers and
//! returns when every part is done. One job at a time: a second caller that
//! finds the team busy runs its parts itself.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// `(epoch << 32) | next unclaimed part`; a claim is a CAS on both, so a
    /// helper can never claim a part of a job other than the one it read.
    state: AtomicU64,
    parts: AtomicUsize,
    done: AtomicUsize,
    /// The current job, as a pointer to the caller's `Job` (valid while
    /// `done < parts` for the current epoch).
    job: AtomicUsize,
    sleepers: AtomicUsize,
    /// A part panicked (its payload is dropped; the caller panics after the
    /// other parts finished, so nothing outlives the caller's borrows).
    panicked: std::sync::atomic::AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    helpers: AtomicUsize,
}

struct Team {
    shared: &'static Shared,
    busy: Mutex<()>,
    spawn: Mutex<()>,
}

fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| Team {
        shared: Box::leak(Box::new(Shared {
            state: AtomicU64::new(0),
            parts: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            job: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            panicked: std::sync::atomic::AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            helpers: AtomicUsize::new(0),
        })),
        busy: Mutex::new(()),
        spawn: Mutex::new(()),
    })
}

/// Claim and run parts of the job published as `epoch` until none are left.
fn work(s: &Shared, epoch: u64) {
    loop {
        let cur = s.state.load(Acquire);
        let parts = s.parts.load(Acquire) as u64;
        if cur >> 32 != epoch || (cur & 0xffff_ffff) >= parts {
            return;
        }
        if s.state
            .compare_exchange_weak(cur, cur + 1, AcqRel, Acquire)
            .is_ok()
        {
            // SAFETY: the claim succeeded for `epoch`, so the caller is still
            // inside `run` (it waits for this part's `done`), and `job`
            // points at its live `Job`, stored before the epoch was published.
            let job: Job = unsafe { *(s.job.load(Acquire) as *const Job) };
            let part = (cur & 0xffff_ffff) as usize;
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(part)));
            if ok.is_err() {
                s.panicked.store(true, Release);
            }
            s.done.fetch_add(1, AcqRel);
        }
    }
}

fn helper(s: &'static Shared) {
    let mut seen = s.state.load(Acquire) >> 32;
    loop {
        let start = Instant::now();
        while s.state.load(Acquire) >> 32 == seen && start.elapsed() < SPIN {
            std::hint::spin_loop();
        }
        if s.state.load(Acquire) >> 32 == seen {
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, SeqCst);
            while s.state.load(SeqCst) >> 32 == seen {
                g = s
                    .wake
                    .wait_timeout(g, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            s.sleepers.fetch_sub(1, SeqCst);
        }
        seen = s.state.load(Acquire) >> 32;
        work(s, seen);
    }
}

/// Run `f(i)` for every `i < parts` on the caller and `threads − 1` helpers.
pub fn run(parts: usize, threads: usize, f: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 || threads <= 1 {
        (0..parts).for_each(f);
        return;
    }
    let t = team();
    let _busy = match t.busy.try_lock() {
        Ok(g) => g,
        // A part panicked earlier; the team itself is still consistent.
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            (0..parts).for_each(f);
            return;
        }
    };
    let s = t.shared;
    if s.helpers.load(Acquire) < threads - 1 {
        let _g = t.spawn.lock().unwrap_or_else(|e| e.into_inner());
        while s.helpers.load(Acquire) < threads - 1 {
            let spawned = std::thread::Builder::new()
                .name("qscope-team".into())
                .spawn(move || helper(s));
            if spawned.is_err() {
                break;
            }
            s.helpers.fetch_add(1, AcqRel);
        }
    }
    let job: Job = f;
    s.job.store(&job as *const Job as usize, Release);
    s.parts.store(parts, Release);
    s.done.store(0, Release);
    s.panicked.store(false, Release);
    let epoch = (s.state.load(Acquire) >> 32) + 1;
    s.state.store(epoch << 32, SeqCst);
    if s.sleepers.load(SeqCst) > 0 {
        let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
    work(s, epoch);
    while s.done.load(Acquire) < parts {
        std::hint::spin_loop();
    }
    if s.panicked.load(Acquire) {
        panic!("a parallel part of an engine op panicked");
    }
}

/// `parts` parts on the team that share some preparation: every part first
/// runs `stage(g)` for groups `g < groups` (its own share first, then any
/// group no part has claimed yet), waits until every group is done, then
/// runs `part(k)`. Preparing on the caller alone left the other cores idle
/// (int8 input quantization: 1.4–2.1 µs per ResNet-20 layer). A part waits
/// only for groups that running parts have claimed, so a team that runs
/// the parts one after the other (busy with another caller) still
/// finishes; a panicking part releases the others, which then skip their
/// `part` (the panic is raised by `run`).
pub fn run_staged(
    parts: usize,
    threads: usize,
    groups: usize,
    stage: &(dyn Fn(usize) + Sync),
    part: &(dyn Fn(usize) + Sync),
) {
    use std::sync::atomic::AtomicBool;
    /// Marks a failed part, so the others stop waiting for its groups.
    struct FailFlag<'a>(&'a AtomicBool);
    impl Drop for FailFlag<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, Release);
            }
        }
    }
    let claimed: Vec<AtomicBool> = (0..groups).map(|_| AtomicBool::new(false)).collect();
    let (done, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
    run(parts, threads, &|k| {
        let _guard = FailFlag(&failed);
        for g in (k * groups / parts..(k + 1) * groups / parts).chain(0..groups) {
            if !claimed[g].swap(true, Relaxed) {
                stage(g);
                done.fetch_add(1, Release);
            }
        }
        // Every group is claimed by a part that is running it now.
        while done.load(Acquire) < groups {
            if failed.load(Acquire) {
                return;
            }
            std::hint::spin_loop();
        }
        part(k);
    });
}
