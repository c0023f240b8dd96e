//! Roles: what a user may do with a document.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A user's role on a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// May read but not change the document.
    #[serde(rename = "ro")]
    ReadOnly,
    /// May read and change the document.
    #[serde(rename = "rw")]
    ReadWrite,
}

impl Role {
    /// Whether this role may change the document.
    pub fn can_write(self) -> bool {
        matches!(self, Role::ReadWrite)
    }

    /// The contract's text form: `rw` or `ro`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "ro",
            Role::ReadWrite => "rw",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is neither `rw` nor `ro`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a role: expected rw or ro")]
pub struct ParseRoleError(pub String);

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rw" => Ok(Role::ReadWrite),
            "ro" => Ok(Role::ReadOnly),
            other => Err(ParseRoleError(other.chars().take(32).collect())),
        }
    }
}
