//! A TCP proxy a test puts in front of a server: it can be cut (every connection dropped, new
//! ones refused), restored, and pointed at another port (a load balancer moving its traffic).

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

pub struct Proxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `target` on loopback.
    pub async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (to, c, list) = (target.clone(), cut.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = to.load(Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                list.lock().unwrap().push(task);
            }
        });
        Proxy {
            port,
            target,
            cut,
            conns,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.drop_connections();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Sends new connections to `target` (those open stay where they are).
    pub fn point_to(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }

    fn drop_connections(&self) {
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}
