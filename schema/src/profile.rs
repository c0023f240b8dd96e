//! [`Profile`]: one user's public profile.
//!
//! Root fields (schema version 2, unchanged since 1): `kind: "profile"`, `schema_version`,
//! `user`, `display_name`, optional `avatar_url` and `status`. Each is a register: concurrent
//! writes resolve to one value everywhere.

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};

use crate::error::{At, ReadError, WriteError};
use crate::kind::expect_kind;
use crate::partial::{entry, Partial, Skips};
use crate::tx::transact;
use crate::value::{opt_str, req_str};
use crate::write::{check_arg, check_empty, write};
use crate::{Kind, MAX_NAME_LEN, MAX_TITLE_LEN, MAX_URL_LEN, SCHEMA_VERSION};

/// A user's profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Whose profile this is.
    pub user: String,
    /// The name to show.
    pub display_name: String,
    /// A picture.
    pub avatar_url: Option<String>,
    /// A short status line.
    pub status: Option<String>,
}

impl Profile {
    fn check(&self) -> Result<(), WriteError> {
        check_arg("user", &self.user, MAX_NAME_LEN, true)?;
        check_arg("display_name", &self.display_name, MAX_NAME_LEN, true)?;
        if let Some(u) = &self.avatar_url {
            check_arg("avatar_url", u, MAX_URL_LEN, true)?;
        }
        if let Some(s) = &self.status {
            check_arg("status", s, MAX_TITLE_LEN, true)?;
        }
        Ok(())
    }

    /// Makes an empty document this profile, in one change.
    pub fn create(doc: &mut Automerge, profile: &Profile, wall_ms: u64) -> Result<(), WriteError> {
        check_empty(doc)?;
        profile.check()?;
        transact(doc, wall_ms, Some("weft: create profile"), |tx| {
            tx.put(ROOT, "kind", Kind::Profile.as_str())?;
            tx.put(ROOT, "schema_version", SCHEMA_VERSION as i64)?;
            put_fields(tx, &Profile::default(), profile)
        })
    }

    /// Reads the profile, and the fields that don't fit the schema (skipped: a required one
    /// reads as empty, an optional one as absent). Reading never writes.
    pub fn read(doc: &Automerge) -> Result<Partial<Profile>, ReadError> {
        let mut skips = Skips::new();
        let p = read_in(doc, &mut skips)?;
        Ok(Partial::new(p, skips))
    }

    /// Writes the fields of `profile` that differ from the document's; a field that doesn't
    /// read is written over.
    pub fn update(doc: &mut Automerge, profile: &Profile, wall_ms: u64) -> Result<(), WriteError> {
        profile.check()?;
        write(doc, &[Kind::Profile], wall_ms, |tx, _| {
            let old = read_in(tx, &mut Skips::new())?;
            put_fields(tx, &old, profile)
        })
    }
}

pub(crate) fn read_in<D: ReadDoc>(doc: &D, skips: &mut Skips) -> Result<Profile, ReadError> {
    expect_kind(doc, Kind::Profile)?;
    let root = At::Root;
    let mut field = |key: &'static str, max: usize, expected: &'static str, required: bool| {
        let at = root.key(key);
        let v = if required {
            req_str(doc, &ROOT, key, at, max, expected).map(Some)
        } else {
            opt_str(doc, &ROOT, key, at, max, expected)
        };
        entry(v, at, skips).map(Option::flatten)
    };
    Ok(Profile {
        user: field("user", MAX_NAME_LEN, "a user id", true)?.unwrap_or_default(),
        display_name: field("display_name", MAX_NAME_LEN, "a name", true)?.unwrap_or_default(),
        avatar_url: field("avatar_url", MAX_URL_LEN, "a URL", false)?,
        status: field("status", MAX_TITLE_LEN, "a status line", false)?,
    })
}

fn put_fields(
    tx: &mut automerge::transaction::Transaction<'_>,
    old: &Profile,
    new: &Profile,
) -> Result<(), WriteError> {
    if old.user != new.user {
        tx.put(ROOT, "user", new.user.as_str())?;
    }
    if old.display_name != new.display_name {
        tx.put(ROOT, "display_name", new.display_name.as_str())?;
    }
    for (key, o, n) in [
        ("avatar_url", &old.avatar_url, &new.avatar_url),
        ("status", &old.status, &new.status),
    ] {
        if o != n {
            match n {
                Some(v) => tx.put(ROOT, key, v.as_str())?,
                None => tx.delete(ROOT, key)?,
            }
        }
    }
    Ok(())
}
