//! `weft`: one device's documents on the command line (see `weft --help` and the contract).

mod cli;
mod ipc;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use weft_core::store::StoreError;
use weft_peer::{DataDir, Device, DeviceError};

use crate::cli::{exit, Cli, Command, Failure, Out, Sink};

/// How long a command waits for a data directory another short command holds.
const BUSY_WAIT: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                eprintln!("weft: a command is missing; see `weft --help`");
                return ExitCode::from(exit::USAGE as u8);
            }
            // One plain sentence: clap's first line, without its prefix and usage block.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("weft: {first}");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    init_tracing(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weft: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE as u8);
        }
    };
    let result = runtime.block_on(run(cli));
    // Connection tasks that are still closing must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("weft: {}", f.message);
            ExitCode::from(f.code.clamp(1, 255) as u8)
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let dir = match cli.data_dir {
        Some(p) => DataDir::new(p),
        None => DataDir::platform_default().ok_or_else(|| {
            Failure::new(
                exit::USAGE,
                "no data directory: pass --data-dir or set WEFT_DATA_DIR",
            )
        })?,
    };
    let mut command = cli.command;
    if let Ok(cwd) = std::env::current_dir() {
        command.absolutize(&cwd);
    }
    if let Command::Init { name } = &command {
        let key = dir.init(name.as_deref()).map_err(Failure::from)?;
        println!("{}", key.device_id());
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + BUSY_WAIT;
    loop {
        if let Some(stream) = ipc::connect(&dir.socket_path()).await {
            return ipc::run_remote(stream, command).await;
        }
        match Device::open(dir.clone()).await {
            Ok(device) => return run_local(device, command).await,
            Err(DeviceError::Store(StoreError::Locked { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                // Another command holds the store: a long-running one opens its socket in a
                // moment, a short one finishes in a moment.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(DeviceError::Store(StoreError::Locked { .. })) => {
                return Err(DeviceError::Busy {
                    path: dir.path().to_owned(),
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn run_local(device: Device, command: Command) -> Result<(), Failure> {
    let (sink, mut rx) = Sink::channel();
    let printer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut stdout = tokio::io::stdout();
        while let Some(out) = rx.recv().await {
            match out {
                Out::Stdout(s) => {
                    let _ = stdout.write_all(s.as_bytes()).await;
                    let _ = stdout.flush().await;
                }
                Out::Stderr(s) => eprintln!("{s}"),
            }
        }
    });
    let serving = CancellationToken::new();
    let server = if command.is_long_running() {
        match ipc::serve(device.clone(), device.dir().socket_path(), serving.clone()) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the local socket; other commands will wait for this one");
                None
            }
        }
    } else {
        None
    };
    let result = tokio::select! {
        r = cli::execute(&device, command, &sink) => r,
        _ = shutdown_signal() => Ok(()),
    };
    drop(sink);
    let _ = printer.await;
    serving.cancel();
    if let Some(s) = server {
        let _ = s.await;
    }
    device.close().await;
    result
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
