//! Tests of the secrets transform.
