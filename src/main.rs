//! The `qscope` binary: argument parsing and dispatch only. Every command is a
//! thin layer over the library; `anyhow` lives here and nowhere else.
mod cli;

// Large tensors are allocated and freed every layer; glibc returns them to
// the OS each time (page faults were 15 % of a training step), mimalloc keeps them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v2 and v3), which the
/// Rust bindings do not name: the option just before `use_numa_nodes`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const _: () = assert!(libmimalloc_sys::mi_option_use_numa_nodes == MI_OPTION_PURGE_DELAY + 1);

/// Keep freed memory committed for 10 s before returning it to the OS, for
/// commands that train. A training step frees and allocates its
/// activations (hundreds of MB) every few hundred ms; with mimalloc's
/// default purging (1 s here) much of it came back as fresh pages the
/// kernel had to zero: fine-tuning the sample for 3 epochs took 15 000–
/// 28 000 page faults and 1.2–5.5 s in the kernel, against 700 and 0.5–1 s
/// now. Inference commands keep the default, so the memory `bench` reports
/// is what the model's format holds, not freed load-time copies.
/// `MIMALLOC_PURGE_DELAY` still overrides it.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a global option; mimalloc allows it at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    }
}

/// `qscope info M | head -1` closes the pipe before the table is printed,
/// and Rust ignores SIGPIPE, so `println!` panicked ("failed printing to
/// stdout"). Like other command-line tools, end quietly instead. Not for the
/// dashboard, which must restore the terminal on its way out.
fn end_quietly_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: resets one signal's disposition to the default before any
    // thread starts; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    use cli::Command as C;
    if !matches!(args.command, None | Some(C::Dashboard(_))) {
        end_quietly_on_broken_pipe();
    }
    if matches!(
        args.command,
        None | Some(C::Dashboard(_) | C::Finetune(_) | C::Cora(_) | C::Laq(_) | C::Run(_))
    ) {
        keep_freed_memory();
    }
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
