//! `weft-relay token`: mints an HS256 token for development and tests.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use weft_relay::{load_secret, Claims, Minter};

use super::args::{TokenArgs, UsageError};

/// Prints the token `args` describe on stdout.
pub(crate) fn token(args: TokenArgs) -> anyhow::Result<()> {
    let mut docs = BTreeMap::new();
    for grant in &args.docs {
        if let Some(previous) = docs.insert(grant.doc, grant.role) {
            if previous != grant.role {
                return Err(UsageError(format!(
                    "--doc names {} twice with different roles",
                    grant.doc
                ))
                .into());
            }
        }
    }
    let secret = load_secret(&args.secret_file)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();

    let mut claims = Claims::new(args.sub, now, args.ttl.as_secs().max(1))
        .with_create(args.create)
        .with_admin(args.admin);
    claims.docs = docs;
    if let Some(aud) = args.audience {
        claims = claims.with_audience(aud);
    }
    if let Some(iss) = args.issuer {
        claims = claims.with_issuer(iss);
    }
    let token = Minter::new(&secret).mint(&claims)?;
    println!("{token}");
    Ok(())
}
