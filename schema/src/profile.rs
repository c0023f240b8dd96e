//! [`Profile`]: one user's public profile.
//!
//! Root fields (schema version 2, unchanged since 1): `kind: "profile"`, `schema_version`,
//! `user`, `display_name`, optional `avatar_url` and `status`. Each is a register: concurrent
//! writes resolve to one value everywhere.

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ROOT};

use crate::error::{At, ReadError, WriteError};
use crate::kind::expect_kind;
use crate::value::{opt_str, req_str};
use crate::write::{check_arg, check_empty, transact, write};
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

    /// Reads the profile. Reading never writes.
    pub fn read(doc: &Automerge) -> Result<Profile, ReadError> {
        read_in(doc)
    }

    /// Writes the fields of `profile` that differ from the document's.
    pub fn update(doc: &mut Automerge, profile: &Profile, wall_ms: u64) -> Result<(), WriteError> {
        profile.check()?;
        write(doc, &[Kind::Profile], wall_ms, |tx, _| {
            let old = read_in(tx)?;
            put_fields(tx, &old, profile)
        })
    }
}

fn read_in<D: ReadDoc>(doc: &D) -> Result<Profile, ReadError> {
    expect_kind(doc, Kind::Profile)?;
    let root = At::Root;
    Ok(Profile {
        user: req_str(
            doc,
            &ROOT,
            "user",
            root.key("user"),
            MAX_NAME_LEN,
            "a user id",
        )?,
        display_name: req_str(
            doc,
            &ROOT,
            "display_name",
            root.key("display_name"),
            MAX_NAME_LEN,
            "a name",
        )?,
        avatar_url: opt_str(
            doc,
            &ROOT,
            "avatar_url",
            root.key("avatar_url"),
            MAX_URL_LEN,
            "a URL",
        )?,
        status: opt_str(
            doc,
            &ROOT,
            "status",
            root.key("status"),
            MAX_TITLE_LEN,
            "a status line",
        )?,
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
