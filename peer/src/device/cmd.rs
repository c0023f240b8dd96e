//! The messages the device handle and the connection tasks send the driver.

use std::any::Any;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weft_core::automerge::Automerge;
use weft_core::engine::ConnId;
use weft_core::quic::DeviceKey;
use weft_core::wire::Message;
use weft_core::{DeviceId, DocId, Document};

use super::{ControlOp, DocInfo};
use crate::status::LinkState;
use crate::{DataDir, DeviceError};

pub(crate) type ChangeFn = Box<dyn FnOnce(&mut Automerge) -> Box<dyn Any + Send> + Send>;
pub(crate) type ReadFn = Box<dyn FnOnce(&Document) -> Box<dyn Any + Send> + Send>;
pub(crate) type Reply<T> = oneshot::Sender<Result<T, DeviceError>>;
/// A caller waiting for its write to be durable, and the closure's result to hand it.
pub(crate) type Waiter = (Reply<Box<dyn Any + Send>>, Box<dyn Any + Send>);

/// What the driver hands a connection's writer.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Msg(Message),
    Close,
}

pub(crate) enum Op {
    Change(ChangeFn, Reply<Box<dyn Any + Send>>),
    Read(ReadFn, Reply<Box<dyn Any + Send>>),
}

/// What kind of connection a [`ConnId`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnKind {
    /// To a relay: it grants roles and lists documents.
    Relay,
    /// To a peer device we dialed.
    Dialer,
    /// From a peer device that dialed us.
    Listener,
}

pub(crate) struct Registration {
    pub(crate) link: u64,
    pub(crate) kind: ConnKind,
    pub(crate) out: mpsc::Sender<Outgoing>,
    /// The stable id the other side's sync states are stored under.
    pub(crate) peer_key: Vec<u8>,
    pub(crate) user: Option<String>,
    /// Documents to ask for besides the local ones.
    pub(crate) extra_docs: Vec<DocId>,
}

pub(crate) enum Cmd {
    Create {
        kind: Option<String>,
        init: ChangeFn,
        reply: Reply<DocId>,
    },
    Op(DocId, Op),
    List(oneshot::Sender<Vec<DocInfo>>),
    Info(DocId, oneshot::Sender<Option<DocInfo>>),
    NewLink(String, oneshot::Sender<u64>),
    LinkState {
        link: u64,
        state: LinkState,
        error: Option<String>,
        refused: bool,
    },
    DropLink(u64),
    AddConn(Registration, oneshot::Sender<ConnId>),
    Inbound(ConnId, Message),
    Closed(ConnId),
    Ephemeral(DocId, Vec<u8>),
    Control(
        ControlOp,
        oneshot::Sender<Result<oneshot::Receiver<Result<(), String>>, DeviceError>>,
    ),
    /// The cached last N messages of a document, if the cache serves them.
    CachedTail(
        DocId,
        usize,
        oneshot::Sender<Option<weft_schema::Partial<Vec<weft_schema::Message>>>>,
    ),
    /// Evict every document no connection holds (their tails cached first); how many went.
    TrimMemory(oneshot::Sender<usize>),
    Shutdown(oneshot::Sender<()>),
}

/// What the device's connection tasks hold of it: the driver's command queue and what a
/// connection needs (the device key, the data directory, the device's cancellation).
#[derive(Clone)]
pub(crate) struct DriverHandle(Arc<HandleInner>);

struct HandleInner {
    cmds: mpsc::Sender<Cmd>,
    key: DeviceKey,
    dir: DataDir,
    cancel: CancellationToken,
}

impl DriverHandle {
    pub(crate) fn new(
        cmds: mpsc::Sender<Cmd>,
        key: DeviceKey,
        dir: DataDir,
        cancel: CancellationToken,
    ) -> DriverHandle {
        DriverHandle(Arc::new(HandleInner {
            cmds,
            key,
            dir,
            cancel,
        }))
    }

    /// The device's id.
    pub(crate) fn id(&self) -> DeviceId {
        self.0.key.device_id()
    }

    /// The device key.
    pub(crate) fn key(&self) -> &DeviceKey {
        &self.0.key
    }

    /// The data directory.
    pub(crate) fn dir(&self) -> &DataDir {
        &self.0.dir
    }

    /// Cancelled when the device closes.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.0.cancel
    }

    /// Hands `cmd` to the driver; [`DeviceError::Closed`] once it has stopped.
    pub(crate) async fn cmd(&self, cmd: Cmd) -> Result<(), DeviceError> {
        self.0.cmds.send(cmd).await.map_err(|_| DeviceError::Closed)
    }

    /// A new link (a connection's entry in the device's status) named `name`.
    pub(crate) async fn new_link(&self, name: String) -> Result<u64, DeviceError> {
        let (tx, rx) = oneshot::channel();
        self.cmd(Cmd::NewLink(name, tx)).await?;
        rx.await.map_err(|_| DeviceError::Closed)
    }
}
