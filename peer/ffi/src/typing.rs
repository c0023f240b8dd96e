//! Typing indicators: an ephemeral message with a small tagged payload, sent by
//! `WeftDevice::set_typing` and recognised by the listener.

/// The ephemeral payload of "typing" / "stopped typing".
const TYPING_ON: &[u8] = b"weft:typing:1";
const TYPING_OFF: &[u8] = b"weft:typing:0";

/// The payload that says `typing`.
pub(crate) fn payload(typing: bool) -> Vec<u8> {
    if typing { TYPING_ON } else { TYPING_OFF }.to_vec()
}

/// What `data` says, if it is a typing payload.
pub(crate) fn parse(data: &[u8]) -> Option<bool> {
    if data == TYPING_ON {
        Some(true)
    } else if data == TYPING_OFF {
        Some(false)
    } else {
        None
    }
}
