//! Instrumentation libraries as the InstrumentationConfig names them (Go import paths) and as
//! the probes switch them (`GO_LIBRARY_*` bits).

use odiglet_common::go::{
    GO_LIBRARY_GRPC_CLIENT, GO_LIBRARY_GRPC_PROPAGATION, GO_LIBRARY_GRPC_SERVER,
    GO_LIBRARY_HTTP_CLIENT, GO_LIBRARY_HTTP_PROPAGATION, GO_LIBRARY_HTTP_SERVER, GO_LIBRARY_SQL,
};

use super::TracesConfig;
use crate::instrument::library_bits;

/// One switchable library of the probes: its bit, its import path and a short name used as
/// the InstrumentationInstance component and in the status API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Library {
    pub bit: u32,
    pub import_path: &'static str,
    pub name: &'static str,
    /// How `instrument::resolve_targets` names it in its skip reasons.
    pub resolve_label: &'static str,
}

/// Every library bit the probes know, in report order.
pub const LIBRARIES: [Library; 7] = [
    Library {
        bit: GO_LIBRARY_HTTP_SERVER,
        import_path: "net/http",
        name: "net/http.server",
        resolve_label: "net/http server",
    },
    Library {
        bit: GO_LIBRARY_HTTP_CLIENT,
        import_path: "net/http",
        name: "net/http.client",
        resolve_label: "net/http client",
    },
    Library {
        bit: GO_LIBRARY_HTTP_PROPAGATION,
        import_path: "net/http",
        name: "net/http.propagation",
        resolve_label: "net/http traceparent propagation",
    },
    Library {
        bit: GO_LIBRARY_SQL,
        import_path: "database/sql",
        name: "database/sql",
        resolve_label: "database/sql",
    },
    Library {
        bit: GO_LIBRARY_GRPC_SERVER,
        import_path: "google.golang.org/grpc",
        name: "grpc.server",
        resolve_label: "google.golang.org/grpc server",
    },
    Library {
        bit: GO_LIBRARY_GRPC_CLIENT,
        import_path: "google.golang.org/grpc",
        name: "grpc.client",
        resolve_label: "google.golang.org/grpc client",
    },
    Library {
        bit: GO_LIBRARY_GRPC_PROPAGATION,
        import_path: "google.golang.org/grpc",
        name: "grpc.propagation",
        resolve_label: "google.golang.org/grpc traceparent propagation",
    },
];

/// The libraries a config wants on: none when traces are off, otherwise every library but the
/// disabled ones. Unknown import paths disable nothing.
pub fn wanted(traces: &TracesConfig) -> u32 {
    if !traces.enabled {
        return 0;
    }
    library_bits(&traces.disabled_libraries)
}

/// Names of the libraries in `bits`, in report order.
pub fn names(bits: u32) -> Vec<&'static str> {
    LIBRARIES
        .iter()
        .filter(|library| bits & library.bit != 0)
        .map(|library| library.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_off_disables_everything_and_net_http_disables_its_three_bits() {
        assert_eq!(
            wanted(&TracesConfig::default()),
            crate::instrument::ALL_LIBRARIES
        );
        let off = TracesConfig {
            enabled: false,
            disabled_libraries: Vec::new(),
        };
        assert_eq!(wanted(&off), 0);
        let no_http = TracesConfig {
            enabled: true,
            disabled_libraries: vec!["net/http".into()],
        };
        assert_eq!(
            wanted(&no_http),
            GO_LIBRARY_SQL
                | GO_LIBRARY_GRPC_SERVER
                | GO_LIBRARY_GRPC_CLIENT
                | GO_LIBRARY_GRPC_PROPAGATION
        );
        let unknown = TracesConfig {
            enabled: true,
            disabled_libraries: vec!["github.com/unknown/lib".into()],
        };
        assert_eq!(wanted(&unknown), crate::instrument::ALL_LIBRARIES);
        assert_eq!(
            names(GO_LIBRARY_HTTP_SERVER | GO_LIBRARY_HTTP_PROPAGATION),
            ["net/http.server", "net/http.propagation"]
        );
    }
}
