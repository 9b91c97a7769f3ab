//! Network-level guards shared by the HTTP sidecar and SIP/TCP: connection caps in
//! total and per source, and the file-descriptor budget that bounds them.

pub mod conn_cap;
pub mod fd_budget;

pub use conn_cap::{admit, source_key, Admission, ConnCaps, ConnCounter, ConnPermit};
pub use fd_budget::{plan_fds, FdPlan, FdPlanInput};
