//! `weft sync` (with a relay or a peer device, `--once` or `--watch`) and `weft p2p listen`:
//! keeping a link, waiting until it is settled, and telling its progress on stderr.

use std::time::Duration;

use weft_core::DeviceId;
use weft_peer::{
    Device, DeviceError, LinkHandle, LinkState, LinkStatus, PeerConfig, RelayConfig, SyncState,
    TokenSource,
};

use super::args::SyncArgs;
use super::output::{exit, Failure, Sink};

pub(super) async fn sync(device: &Device, args: SyncArgs, sink: &Sink) -> Result<(), Failure> {
    let handle = connect(device, &args).await?;
    if args.watch {
        return follow(device, &handle, sink).await;
    }
    let outcome = wait_settled(device, &handle, &args, sink).await;
    handle.stop().await;
    report(device, &args, outcome?, sink).await
}

/// Starts the link `args` name: to a relay, or to a peer device.
async fn connect(device: &Device, args: &SyncArgs) -> Result<LinkHandle, Failure> {
    if let Some((relay, alternates)) = args.relay.split_first() {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => TokenSource::Static(t.clone()),
            (None, Some(f)) => TokenSource::File(f.clone()),
            (None, None) => {
                return Err(Failure::new(
                    exit::USAGE,
                    "a token is required: pass --token, --token-file or WEFT_TOKEN",
                ))
            }
        };
        token
            .read()
            .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
        let pinned_cert = args.relay_cert.as_deref().map(load_certs).transpose()?;
        Ok(device
            .connect_relay(RelayConfig {
                addr: relay.clone(),
                alternates: alternates.to_vec(),
                token,
                pinned_cert,
                docs: args.doc.clone(),
                reconnect: args.watch,
                max_backoff: args.max_backoff,
            })
            .await?)
    } else {
        let (Some(peer), Some(key)) = (&args.peer, args.peer_key) else {
            return Err(Failure::new(
                exit::USAGE,
                "--relay or --peer with --peer-key is required",
            ));
        };
        Ok(device
            .connect_peer(PeerConfig {
                addr: peer.clone(),
                peer: key,
                docs: args.doc.clone(),
                reconnect: args.watch,
                max_backoff: args.max_backoff,
            })
            .await?)
    }
}

fn load_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Failure> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("cannot read the relay certificate {}: {e}", path.display()),
            )
        })?
        .collect();
    let certs = certs.map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!(
                "the relay certificate {} is not valid PEM: {e}",
                path.display()
            ),
        )
    })?;
    if certs.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "the relay certificate file {} holds no certificate",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// `--watch`: prints every change of the link's status on stderr until killed (or the client
/// disconnects). The link lives as long as `handle`.
async fn follow(device: &Device, handle: &LinkHandle, sink: &Sink) -> Result<(), Failure> {
    let link = handle.id();
    let mut status = device.status();
    let mut last = None;
    loop {
        let line = {
            let s = status.borrow_and_update();
            s.links.get(&link).map(describe_link)
        };
        if let Some(line) = line {
            if last.as_ref() != Some(&line) {
                sink.err(line.clone()).await;
                last = Some(line);
            }
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { return Ok(()) },
            _ = sink.closed() => return Ok(()),
        }
    }
}

/// `--once`: waits until every document is synced or refused, the link fails, or the timeout.
async fn wait_settled(
    device: &Device,
    handle: &LinkHandle,
    args: &SyncArgs,
    sink: &Sink,
) -> Result<LinkStatus, Failure> {
    let link = handle.id();
    let mut status = device.status();
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut was_online = false;
    let mut progress = Progress::default();
    loop {
        let mut line = None;
        let verdict = {
            let s = status.borrow_and_update();
            s.links.get(&link).and_then(|l| {
                was_online |= l.state == LinkState::Online;
                if l.state == LinkState::Online {
                    line = progress.update(l);
                }
                if l.settled() && l.discovered {
                    return Some(Ok(l.clone()));
                }
                if l.state == LinkState::Offline && (l.last_error.is_some() || handle.is_finished())
                {
                    let msg = l
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "the connection ended".into());
                    let code = if l.refused {
                        exit::REFUSED
                    } else {
                        exit::UNREACHABLE
                    };
                    return Some(Err(Failure::new(code, format!("{}: {msg}", l.name))));
                }
                None
            })
        };
        if let Some(line) = line {
            sink.err(line).await;
        }
        if let Some(v) = verdict {
            break v;
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { break Err(Failure::new(exit::FAILURE, "the device shut down")) },
            _ = tokio::time::sleep_until(deadline) => {
                let what = if was_online { "syncing" } else { "connecting" };
                break Err(Failure::new(exit::UNREACHABLE, format!("timed out after {} {what}", humantime::format_duration(args.timeout))));
            }
        }
    }
}

/// What a settled link `l` says: the documents the relay refused (a refused `--doc` fails the
/// command, another one is named and skipped), refused changes and requests, and how many
/// documents synced.
async fn report(
    device: &Device,
    args: &SyncArgs,
    l: LinkStatus,
    sink: &Sink,
) -> Result<(), Failure> {
    let mut refused_requested = Vec::new();
    for (doc, d) in &l.docs {
        if d.state == SyncState::Refused {
            if args.doc.contains(doc) {
                refused_requested.push(*doc);
            } else if matches!(device.info(*doc).await, Err(DeviceError::Deleted(_))) {
                sink.err(format!("removed {doc}: its owner deleted it"))
                    .await;
            } else {
                sink.err(format!("skipped {doc}: the relay refused it"))
                    .await;
            }
        }
    }
    if !l.change_refusals.is_empty() {
        return Err(Failure::new(
            exit::REFUSED,
            format!("the relay refused {}", l.change_refusals.join("; ")),
        ));
    }
    if !l.control_errors.is_empty() {
        return Err(Failure::new(
            exit::REFUSED,
            format!("the relay refused: {}", l.control_errors.join("; ")),
        ));
    }
    if !refused_requested.is_empty() {
        let list: Vec<String> = refused_requested.iter().map(|d| d.to_string()).collect();
        return Err(Failure::new(
            exit::REFUSED,
            format!("not permitted: {}", list.join(", ")),
        ));
    }
    let synced = l
        .docs
        .values()
        .filter(|d| d.state == SyncState::Synced)
        .count();
    sink.err(format!("synced {synced} documents with {}", l.name))
        .await;
    Ok(())
}

/// Progress of a large initial sync, on stderr: a line when the count of documents done moves
/// on, at most every half second, and only for transfers of many documents.
#[derive(Default)]
struct Progress {
    last: Option<std::time::Instant>,
    done: usize,
}

impl Progress {
    const MIN_DOCS: usize = 20;

    fn update(&mut self, l: &LinkStatus) -> Option<String> {
        let total = l.docs.len();
        let done = l
            .docs
            .values()
            .filter(|d| matches!(d.state, SyncState::Synced | SyncState::Refused))
            .count();
        if total < Self::MIN_DOCS || done == self.done {
            return None;
        }
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
            && done < total
        {
            return None;
        }
        self.last = Some(std::time::Instant::now());
        self.done = done;
        let width = 30;
        let filled = done * width / total.max(1);
        Some(format!(
            "[{}{}] {done}/{total} documents",
            "#".repeat(filled),
            " ".repeat(width - filled)
        ))
    }
}

fn describe_link(l: &LinkStatus) -> String {
    let synced = l
        .docs
        .values()
        .filter(|d| d.state == SyncState::Synced)
        .count();
    match l.state {
        LinkState::Online => format!(
            "{}: online{}, {synced}/{} documents synced",
            l.name,
            l.user
                .as_ref()
                .map(|u| format!(" as {u}"))
                .unwrap_or_default(),
            l.docs.len()
        ),
        LinkState::Connecting => format!("{}: connecting", l.name),
        LinkState::Offline => format!(
            "{}: offline{}",
            l.name,
            l.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
    }
}

pub(super) async fn p2p_listen(
    device: &Device,
    listen: std::net::SocketAddr,
    allow: Vec<DeviceId>,
    sink: &Sink,
) -> Result<(), Failure> {
    let bound = device
        .listen_p2p(listen, allow)
        .await
        .map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    sink.out(format!("{}\n", device.id())).await?;
    sink.err(format!("listening on {bound}")).await;
    let mut status = device.status();
    let mut last = String::new();
    loop {
        let line = {
            let s = status.borrow_and_update();
            s.links
                .values()
                .map(describe_link)
                .collect::<Vec<_>>()
                .join("; ")
        };
        if line != last && !line.is_empty() {
            sink.err(line.clone()).await;
        }
        last = line;
        tokio::select! {
            r = status.changed() => if r.is_err() { return Ok(()) },
            _ = sink.closed() => return Ok(()),
        }
    }
}
