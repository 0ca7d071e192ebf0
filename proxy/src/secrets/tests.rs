//! Tests of the secret sources.
