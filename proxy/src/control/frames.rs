//! The control stream's frames: the codec shared with the control plane.

pub use mesh_table::frames::*;
