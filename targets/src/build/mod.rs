//! Images from source: build contexts, content hashes, and (with the Docker adapter)
//! building them.

pub mod context;
pub mod dockerfile;
pub mod ignore;
