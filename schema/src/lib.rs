//! weft-schema
