//! Who may sync what: the relay's authorization decision for one (token, document) pair.
//!
//! The rules are the contract's "Who may sync what":
//! - the **owner** is the `sub` of the token that first uploaded the document (that token needs
//!   `create`); ownership never changes, and a document the relay ever stored is never claimable;
//! - a token may **read** a document when its user owns it, the access list names the user, or
//!   the token's `docs` names the document; it may **write** when it is the owner or has `rw`
//!   from either source;
//! - a document's own content never grants anything.
//!
//! Every refusal is the same [`Decision::Refused`], whether or not the document exists. Only
//! [`refusal_code`] tells a deleted document's former members that it was deleted.

use crate::meta::DocMeta;
use weft_core::wire::ErrorCode;
use weft_core::{DocId, Role};

use crate::Claims;

/// What a connection may do with a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It may sync the document with this role.
    Allowed(Role),
    /// The document is new to the relay and this token may create it: its `sub` becomes the
    /// owner (recorded before anything else happens).
    Create,
    /// Refused (never says whether the document exists).
    Refused,
}

/// Decides what `claims` may do with a document whose relay metadata is `meta` (`None`: the
/// relay has never stored it).
pub fn decide(claims: &Claims, doc: &DocId, meta: Option<&DocMeta>) -> Decision {
    let granted = claims.role_for(doc);
    let Some(meta) = meta else {
        return match granted {
            // A token grant for a document nobody uploaded yet lets the holder sync it; the
            // first upload with `create` still decides the owner.
            Some(_) if claims.create => Decision::Create,
            Some(role) => Decision::Allowed(role),
            None if claims.create => Decision::Create,
            None => Decision::Refused,
        };
    };
    if meta.deleted_at_ms.is_some() {
        return Decision::Refused;
    }
    let owner = meta.owner.as_deref() == Some(claims.sub.as_str());
    if owner || claims.admin {
        return Decision::Allowed(Role::ReadWrite);
    }
    let listed = meta.access.get(&claims.sub).copied();
    match (listed, granted) {
        (Some(Role::ReadWrite), _) | (_, Some(Role::ReadWrite)) => {
            Decision::Allowed(Role::ReadWrite)
        }
        (Some(Role::ReadOnly), _) | (_, Some(Role::ReadOnly)) => Decision::Allowed(Role::ReadOnly),
        (None, None) => Decision::Refused,
    }
}

/// The role `claims` may sync `doc` with (`None`: refused). Creating gives the creator `rw`.
pub fn readable_role(claims: &Claims, doc: &DocId, meta: Option<&DocMeta>) -> Option<Role> {
    match decide(claims, doc, meta) {
        Decision::Allowed(role) => Some(role),
        Decision::Create => Some(Role::ReadWrite),
        Decision::Refused => None,
    }
}

/// The error code of a refusal: [`ErrorCode::DELETED`] for a deleted document's owner, listed
/// users, token grantees and admins, [`ErrorCode::FORBIDDEN`] for everyone else, so a stranger
/// learns nothing about the document.
pub fn refusal_code(claims: &Claims, doc: &DocId, meta: Option<&DocMeta>) -> ErrorCode {
    let member = meta.is_some_and(|m| {
        m.deleted_at_ms.is_some()
            && (claims.admin
                || m.owner.as_deref() == Some(claims.sub.as_str())
                || m.access.contains_key(&claims.sub)
                || claims.role_for(doc).is_some())
    });
    if member {
        ErrorCode::DELETED
    } else {
        ErrorCode::FORBIDDEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn doc() -> DocId {
        DocId::from_bytes([1; 16])
    }

    fn owned_by(user: &str) -> DocMeta {
        let mut m = DocMeta::default();
        m.owner = Some(user.into());
        m
    }

    #[test]
    fn the_owner_reads_and_writes() {
        let alice = Claims::new("alice", NOW, 60);
        assert_eq!(
            decide(&alice, &doc(), Some(&owned_by("alice"))),
            Decision::Allowed(Role::ReadWrite)
        );
    }

    #[test]
    fn a_stranger_is_refused_whether_or_not_the_document_exists() {
        let bob = Claims::new("bob", NOW, 60);
        assert_eq!(
            decide(&bob, &doc(), Some(&owned_by("alice"))),
            Decision::Refused
        );
        assert_eq!(decide(&bob, &doc(), None), Decision::Refused);
    }

    #[test]
    fn create_claims_only_documents_the_relay_never_stored() {
        let bob = Claims::new("bob", NOW, 60).with_create(true);
        assert_eq!(decide(&bob, &doc(), None), Decision::Create);
        assert_eq!(
            decide(&bob, &doc(), Some(&owned_by("alice"))),
            Decision::Refused
        );
        let mut deleted = owned_by("bob");
        deleted.deleted_at_ms = Some(1);
        assert_eq!(decide(&bob, &doc(), Some(&deleted)), Decision::Refused);
    }

    #[test]
    fn token_grants_and_access_lists_give_the_stronger_role() {
        let ro = Claims::new("bob", NOW, 60).with_doc(doc(), Role::ReadOnly);
        assert_eq!(
            decide(&ro, &doc(), Some(&owned_by("alice"))),
            Decision::Allowed(Role::ReadOnly)
        );
        let mut listed = owned_by("alice");
        listed.access.insert("bob".into(), Role::ReadWrite);
        assert_eq!(
            decide(&ro, &doc(), Some(&listed)),
            Decision::Allowed(Role::ReadWrite)
        );
        let plain = Claims::new("bob", NOW, 60);
        listed.access.insert("bob".into(), Role::ReadOnly);
        assert_eq!(
            decide(&plain, &doc(), Some(&listed)),
            Decision::Allowed(Role::ReadOnly)
        );
    }

    #[test]
    fn only_former_members_learn_that_a_document_was_deleted() {
        let mut deleted = owned_by("alice");
        deleted.access.insert("bob".into(), Role::ReadOnly);
        deleted.deleted_at_ms = Some(1);
        let alice = Claims::new("alice", NOW, 60).with_create(true);
        let bob = Claims::new("bob", NOW, 60);
        let granted = Claims::new("carol", NOW, 60).with_doc(doc(), Role::ReadOnly);
        let stranger = Claims::new("mallory", NOW, 60).with_create(true);
        for member in [&alice, &bob, &granted] {
            assert_eq!(decide(member, &doc(), Some(&deleted)), Decision::Refused);
            assert_eq!(
                refusal_code(member, &doc(), Some(&deleted)),
                ErrorCode::DELETED
            );
        }
        assert_eq!(
            refusal_code(&stranger, &doc(), Some(&deleted)),
            ErrorCode::FORBIDDEN
        );
        assert_eq!(
            refusal_code(&stranger, &doc(), Some(&owned_by("alice"))),
            ErrorCode::FORBIDDEN
        );
        assert_eq!(refusal_code(&stranger, &doc(), None), ErrorCode::FORBIDDEN);
        assert_eq!(
            readable_role(&stranger, &doc(), None),
            Some(Role::ReadWrite)
        );
        assert_eq!(readable_role(&bob, &doc(), Some(&deleted)), None);
    }

    #[test]
    fn admin_tokens_act_for_the_owner() {
        let admin = Claims::new("backend", NOW, 60).with_admin(true);
        assert_eq!(
            decide(&admin, &doc(), Some(&owned_by("alice"))),
            Decision::Allowed(Role::ReadWrite)
        );
    }
}
