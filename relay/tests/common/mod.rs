//! What the relay's integration tests share: the real `weft-relay` binary and its ready line,
//! tokens and the dev certificate (`relay`), a light QUIC device link (`device`), a
//! throwaway Postgres (`pg`), Node clients (`js`) and the `weft` command line (`weft`). Each
//! test binary uses part of it.
#![allow(dead_code)]

pub mod checkpoints;
pub mod cluster;
pub mod device;
pub mod hub;
pub mod js;
pub mod pg;
pub mod proxy;
pub mod quic;
pub mod relay;
pub mod session;
pub mod weft;
pub mod ws;
pub mod wsclient;

// Re-exports: each test binary uses some of them.
#[allow(unused_imports)]
pub use device::{open_subscribed, Link, RELAY};
#[allow(unused_imports)]
pub use relay::{now, now_ms, ready_addr, RelayProcess};
#[allow(unused_imports)]
pub use session::Session;

/// `Deref` and `DerefMut` from a test's own type to the shared one it wraps
/// (`extends!(Device, link: Link)`), so that the shared fields and methods read as its own.
#[macro_export]
macro_rules! extends {
    ($outer:ty, $field:ident: $inner:ty) => {
        impl std::ops::Deref for $outer {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.$field
            }
        }

        impl std::ops::DerefMut for $outer {
            fn deref_mut(&mut self) -> &mut $inner {
                &mut self.$field
            }
        }
    };
}
