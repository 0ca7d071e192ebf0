//! The transforms, one file each. `build` turns a transform's config into a
//! ready-to-run [`crate::pipeline::Transform`].

pub mod allowlist;
