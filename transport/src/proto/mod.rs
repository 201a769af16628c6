//! The sans-IO protocol core: never touches a socket, a thread or a clock.

pub mod range_set;
pub mod recovery;
pub mod streams;
pub mod timer_wheel;
