//! Registration with a trunk's registrar (RFC 3261 10.2): the sans-IO machine
//! (`machine`) and the task that moves its bytes (`task`).

pub mod machine;
pub mod task;
