//! What operators can see and do. Each query and action is implemented once here; the HTTP
//! API (and later the CLI and console) are thin views over it.

pub mod api;
pub mod leads;
