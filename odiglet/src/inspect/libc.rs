//! Which C library an executable uses, from its ELF interpreter (`PT_INTERP`), as Odigos does
//! for .NET (odigos.md §4.4); no interpreter means statically linked.

use serde::Serialize;

use super::elf::ElfImage;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Libc {
    Glibc,
    Musl,
    /// No `PT_INTERP`: a static executable (Go, musl `-static`, ...).
    Static,
}

/// The libc of `image`; `None` for an interpreter that is neither glibc's nor musl's.
pub fn detect(image: &ElfImage) -> Option<Libc> {
    from_interpreter(image.interpreter.as_deref())
}

pub fn from_interpreter(interpreter: Option<&str>) -> Option<Libc> {
    match interpreter {
        None => Some(Libc::Static),
        Some(path) if path.contains("musl") => Some(Libc::Musl),
        Some(path) if path.contains("ld-linux") => Some(Libc::Glibc),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters() {
        assert_eq!(
            from_interpreter(Some("/lib64/ld-linux-x86-64.so.2")),
            Some(Libc::Glibc)
        );
        assert_eq!(
            from_interpreter(Some("/lib/ld-linux-aarch64.so.1")),
            Some(Libc::Glibc)
        );
        assert_eq!(
            from_interpreter(Some("/lib/ld-musl-x86_64.so.1")),
            Some(Libc::Musl)
        );
        assert_eq!(from_interpreter(None), Some(Libc::Static));
        assert_eq!(from_interpreter(Some("/system/bin/linker64")), None);
    }
}
