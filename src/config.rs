//! Settings, read from the environment (or the equivalent flags). Each module owns the
//! settings of what it configures, documented once with its flags so that `leadflow --help`
//! says it; this module only gathers them for the commands that take several.

pub use crate::db::DbSettings;
pub use crate::engine::{TelephonyError, TelephonyKind, TelephonySettings};
pub use crate::metrics::MetricsSettings;
pub use crate::server::HttpSettings;
pub use crate::worker::WorkerSettings;
