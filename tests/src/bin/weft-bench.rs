//! `weft-bench [--quick] [WORKLOAD...]`: measures the relay on loopback.
//!
//! Starts what it measures itself: a real relay (QUIC server, hub, engine and redb store in a
//! temporary directory) in this process on a runtime of its own with one worker thread, and
//! light QUIC devices on another runtime. Prints a table on stderr and one JSON object per
//! workload on stdout, each with a `baseline` measured in the same run.
//!
//! `--pin` puts the relay on one core and the devices on another: the process (and so every
//! thread it starts later: the relay's runtime, blocking pool and store writer, the baseline
//! forwarder) is bound to CPU 0, the devices' runtime threads to CPU 1. Without it the kernel
//! spreads every thread over all cores.
//!
//! Workloads: `fanout`, `throughput`, `wire-bytes`, `reconnect`, `durable-writes`,
//! `initial-sync`, `large-change`, `memory`, `checkpoint` (needs the Postgres server binaries),
//! `presence`, `huge-conversation`, `crowd`, `paused-device`, `cluster` (needs the `weft-relay`
//! binary beside this one and the Postgres server binaries), and with the `samod-bench` feature `ws-native` and `ws-npm`
//! (all of them when none is named). Exit status 2 for an unknown
//! workload or flag, 1 when a measurement fails. What each measures and its latest figures:
//! BENCHMARKS.md.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

#[path = "weft-bench/chain.rs"]
mod chain;
#[path = "weft-bench/checkpoint/mod.rs"]
mod checkpoint;
#[path = "weft-bench/client.rs"]
mod client;
#[path = "weft-bench/cluster.rs"]
mod cluster;
#[path = "weft-bench/cluster_load.rs"]
mod cluster_load;
#[path = "weft-bench/crowd.rs"]
mod crowd;
#[path = "weft-bench/device.rs"]
mod device;
#[path = "weft-bench/failover.rs"]
mod failover;
#[path = "weft-bench/fanout.rs"]
mod fanout;
#[path = "weft-bench/huge.rs"]
mod huge;
#[path = "weft-bench/large_change/mod.rs"]
mod large_change;
#[path = "weft-bench/memory/mod.rs"]
mod memory;
#[path = "weft-bench/paused.rs"]
mod paused;
#[path = "weft-bench/plan.rs"]
mod plan;
#[path = "weft-bench/presence.rs"]
mod presence;
#[path = "weft-bench/proc_cpu.rs"]
mod proc_cpu;
#[path = "weft-bench/relay.rs"]
mod relay;
#[path = "weft-bench/report.rs"]
mod report;
#[cfg(feature = "samod-bench")]
#[path = "weft-bench/samod_ws.rs"]
mod samod_ws;
#[path = "weft-bench/throughput.rs"]
mod throughput;
#[path = "weft-bench/wire_bytes.rs"]
mod wire_bytes;
#[path = "weft-bench/workloads.rs"]
mod workloads;
#[cfg(feature = "samod-bench")]
#[path = "weft-bench/ws_native.rs"]
mod ws_native;
#[path = "weft-bench/ws_server.rs"]
mod ws_server;
#[path = "weft-bench/ws_workloads.rs"]
mod ws_workloads;

use chain::Chain;

/// The same allocator as the `weft-relay` binary, since the relay runs in this process.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use relay::Relay;

use large_change::large_change_workload;
use plan::{Plan, AVAILABLE, IMPLEMENTED, USAGE};
use report::{ms, progress};
use workloads::{fanout_workload, throughput_workload, wire_bytes_workload};

fn main() -> ExitCode {
    if let Ok(mode) = std::env::var(memory::CHILD_ENV) {
        return match memory::run_child(&mode) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft-bench: the memory workload's devices: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(dir) = std::env::var_os(large_change::MAKE_ENV) {
        return match large_change::Big::write_for_parent(std::path::Path::new(&dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft-bench: making the large change: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(config) = std::env::var_os(crowd::CHILD_ENV) {
        return match crowd::joiners_main(std::path::Path::new(&config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft-bench: the crowd's joiners: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    weft_relay::tune_allocator();
    let mut quick = false;
    let mut pin = false;
    let mut workloads: Vec<String> = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--pin" => pin = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            w if IMPLEMENTED.contains(&w) => {
                if !workloads.iter().any(|x| x == w) {
                    workloads.push(w.to_string());
                }
            }
            w if w.starts_with('-') => {
                eprintln!("weft-bench: unknown flag {w}; {USAGE}.");
                return ExitCode::from(2);
            }
            w => {
                eprintln!("weft-bench: unknown workload {w} (available: {AVAILABLE}).");
                return ExitCode::from(2);
            }
        }
    }
    if workloads.is_empty() {
        workloads = IMPLEMENTED
            .iter()
            .filter(|w| cfg!(feature = "samod-bench") || !plan::NEEDS_SAMOD.contains(w))
            .map(|s| s.to_string())
            .collect();
    }
    let plan = Plan {
        pin,
        ..Plan::new(quick)
    };
    match run(plan, &workloads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(plan: Plan, workloads: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    if std::env::var_os("RUST_LOG").is_some() {
        // Diagnostics on demand (e.g. RUST_LOG=weft_core=debug names every resync); off by
        // default, since logging would be measured too.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if plan.pin {
        // Threads inherit their creator's affinity: everything this process starts from now
        // on is on CPU 0, except the devices' threads, which move themselves to CPU 1.
        pin_current_thread(0).context("--pin: cannot bind to CPU 0")?;
        pin_current_thread(1).context("--pin: this machine needs a CPU 1")?;
        pin_current_thread(0).context("--pin: cannot bind to CPU 0")?;
    }
    let pin = plan.pin;
    // The devices' runtime: one worker, so devices and relay each have one of this machine's
    // cores (the relay's runtime has its own thread).
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weft-bench-dev")
        .on_thread_start(move || {
            if pin {
                // Checked above that CPU 1 exists and may be used.
                let _ = pin_current_thread(1);
            }
        })
        .enable_all()
        .build()
        .context("cannot start the devices' runtime")?;
    eprintln!(
        "weft-bench: {} mode{}; generating {} chat changes; relay CPU from {}",
        if plan.quick { "quick" } else { "full" },
        if plan.pin {
            ", relay on CPU 0 and devices on CPU 1"
        } else {
            ""
        },
        plan.chain_len,
        relay::cpu_resolution()
    );
    let chain = Arc::new(Chain::generate(plan.chain_len));
    for w in workloads {
        let t = Instant::now();
        let out = match w.as_str() {
            "fanout" => fanout_workload(&plan, &clients, &chain)?,
            "throughput" => throughput_workload(&plan, &clients, &chain)?,
            "wire-bytes" => wire_bytes_workload(&plan, &clients, &chain)?,
            "durable-writes" => clients.block_on(device::durable_writes(plan.quick))?,
            "initial-sync" => {
                let relay = Relay::start()?;
                let out = clients.block_on(device::initial_sync(&relay, plan.quick))?;
                relay.stop();
                out
            }
            "large-change" => large_change_workload(&plan, &clients)?,
            "checkpoint" => checkpoint::checkpoint_workload(&plan, &clients, &chain)?,
            "presence" => presence::presence_workload(&plan, &clients)?,
            "huge-conversation" => huge::huge_conversation_workload(&plan, &clients)?,
            "crowd" => crowd::crowd_workload(&plan, &clients)?,
            "ws-native" => ws_workloads::ws_native_workload(&plan, &clients)?,
            "ws-npm" => ws_workloads::ws_npm_workload(&plan, &clients)?,
            "reconnect" => device::reconnect(&clients, plan.quick)?,
            "memory" => memory::memory_workload(&plan, &clients)?,
            "paused-device" => paused::paused_device_workload(&clients)?,
            "cluster" => cluster::cluster_workload(&plan, &clients, &chain)?,
            "failover" => failover::failover_workload(&plan, &clients)?,
            other => anyhow::bail!("no workload {other}"),
        };
        eprintln!("  ({w} took {:.1} s)\n", t.elapsed().as_secs_f64());
        println!("{out}");
    }
    eprintln!(
        "weft-bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A progress line on stderr when `WEFT_BENCH_VERBOSE` is set.
/// Binds the calling thread to one CPU.
pub(crate) fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data, initialised by CPU_ZERO before use; CPU_SET checks the
    // index against the set's size; sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of
    // the set we pass and only changes the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
