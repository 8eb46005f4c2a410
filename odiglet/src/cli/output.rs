//! Where the CLI writes: JSON or text lines on stdout, errors on stderr. The only module
//! allowed to print.

use std::io::{self, Write};

/// Writes one line to stdout and flushes it, so streams can be followed live.
/// A closed pipe (`odiglet processes | head`) is reported as `BrokenPipe` for the caller to stop.
pub fn line(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes one line to stderr, ignoring failures (there is nowhere left to report them).
pub fn error_line(text: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{text}");
}
