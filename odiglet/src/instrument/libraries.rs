//! The Go libraries users switch on and off, by the import path they know them by (the names
//! of Odigos' `InstrumentationConfig` `disabledLibraries`), and their `GO_LIBRARY_*` bits.

use odiglet_common::go::{
    GO_LIBRARY_GRPC_CLIENT, GO_LIBRARY_GRPC_PROPAGATION, GO_LIBRARY_GRPC_SERVER,
    GO_LIBRARY_HTTP_CLIENT, GO_LIBRARY_HTTP_PROPAGATION, GO_LIBRARY_HTTP_SERVER, GO_LIBRARY_SQL,
};

use super::ALL_LIBRARIES;

/// Import path → the `GO_LIBRARY_*` bits it covers (spans and their propagation).
pub const LIBRARIES: &[(&str, u32)] = &[
    (
        "net/http",
        GO_LIBRARY_HTTP_SERVER | GO_LIBRARY_HTTP_CLIENT | GO_LIBRARY_HTTP_PROPAGATION,
    ),
    (
        "google.golang.org/grpc",
        GO_LIBRARY_GRPC_SERVER | GO_LIBRARY_GRPC_CLIENT | GO_LIBRARY_GRPC_PROPAGATION,
    ),
    ("database/sql", GO_LIBRARY_SQL),
];

/// The `GO_LIBRARY_*` bits to enable given the import paths of the disabled libraries, for
/// `GoProbes::set_libraries` and `resolve_targets`. Names that are not in [`LIBRARIES`] are
/// ignored (they may name libraries of other languages).
pub fn library_bits(disabled: &[String]) -> u32 {
    LIBRARIES
        .iter()
        .filter(|(name, _)| disabled.iter().any(|d| d.trim() == *name))
        .fold(ALL_LIBRARIES, |bits, (_, library)| bits & !library)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabling_a_library_clears_exactly_its_bits() {
        assert_eq!(library_bits(&[]), ALL_LIBRARIES);
        let all_named = LIBRARIES.iter().fold(0, |bits, (_, b)| bits | b);
        assert_eq!(all_named, ALL_LIBRARIES, "every library has a name");
        let no_sql = library_bits(&["database/sql".to_owned()]);
        assert_eq!(no_sql, ALL_LIBRARIES & !GO_LIBRARY_SQL);
        let none = library_bits(&[
            "net/http".to_owned(),
            " google.golang.org/grpc".to_owned(),
            "database/sql".to_owned(),
            "github.com/unknown/lib".to_owned(),
        ]);
        assert_eq!(none, 0);
        assert_eq!(
            library_bits(&["net/http".to_owned()]) & GO_LIBRARY_HTTP_PROPAGATION,
            0
        );
    }
}
