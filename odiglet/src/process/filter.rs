//! Which processes the lifecycle probe reports: an optional environment-variable filter and an
//! ignore list of executables, applied in the kernel for new processes and here for the
//! start-up scan.

use std::path::Path;

use odiglet_common::lifecycle::{
    ENV_FILTER_LEN, ENV_FILTER_WORDS, IGNORED_EXE_LEN, IGNORED_EXES_MAX,
};

/// The variable Odigos injects into every instrumented container; processes without it are not
/// Odigos' business in cluster mode.
pub const CLUSTER_ENV_FILTER: &str = "ODIGOS_POD_NAME";

/// Executables never reported, as Odigos does: the pod sandbox's `/pause` and the shells and
/// init shims that wrap real workloads (their children are reported when they exec).
pub const DEFAULT_IGNORED_EXES: &[&str] = &[
    "/pause",
    "/bin/sh",
    "/bin/bash",
    "/bin/dash",
    "/bin/ash",
    "/bin/busybox",
    "/usr/bin/sh",
    "/usr/bin/bash",
    "/usr/bin/dash",
    "/usr/bin/busybox",
    "/sbin/tini",
    "/usr/bin/tini",
    "/usr/local/bin/tini",
    "/tini",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error(
        "environment filter `{0}` is not a variable name of 1 to {max} bytes without `=` or NUL",
        max = ENV_FILTER_LEN - 1
    )]
    BadEnvName(String),
    #[error(
        "ignored executable `{0}` must be an absolute path shorter than {max} bytes",
        max = IGNORED_EXE_LEN - 1
    )]
    BadIgnoredExe(String),
    #[error("at most {IGNORED_EXES_MAX} ignored executables are supported, got {0}")]
    TooManyIgnored(usize),
}

/// The validated filter configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessFilter {
    /// `NAME=` of the required variable, if any.
    env_prefix: Option<Vec<u8>>,
    ignored_exes: Vec<String>,
}

impl ProcessFilter {
    /// Validates the filter: the in-kernel comparison has fixed-size buffers.
    pub fn new(env_var: Option<&str>, ignored_exes: &[String]) -> Result<Self, FilterError> {
        let env_prefix = env_var
            .map(|name| {
                let valid = !name.is_empty()
                    && name.len() < ENV_FILTER_LEN
                    && !name.bytes().any(|b| b == b'=' || b == 0);
                if valid {
                    Ok([name.as_bytes(), b"="].concat())
                } else {
                    Err(FilterError::BadEnvName(name.to_owned()))
                }
            })
            .transpose()?;
        if ignored_exes.len() > IGNORED_EXES_MAX as usize {
            return Err(FilterError::TooManyIgnored(ignored_exes.len()));
        }
        for exe in ignored_exes {
            // One byte less than the key so a longer path can never match after truncation.
            if !exe.starts_with('/') || exe.len() >= IGNORED_EXE_LEN - 1 || exe.contains('\0') {
                return Err(FilterError::BadIgnoredExe(exe.clone()));
            }
        }
        Ok(Self {
            env_prefix,
            ignored_exes: ignored_exes.to_vec(),
        })
    }

    /// No environment filter and the default ignore list (standalone mode).
    pub fn standalone() -> Self {
        let ignored: Vec<String> = DEFAULT_IGNORED_EXES.iter().map(|s| s.to_string()).collect();
        Self::new(None, &ignored).expect("the defaults are valid")
    }

    /// The required variable's name, if a filter is set.
    pub fn env_var(&self) -> Option<&str> {
        let prefix = self.env_prefix.as_deref()?;
        std::str::from_utf8(prefix.strip_suffix(b"=")?).ok()
    }

    /// `(words, mask, len)` for the probe's word-wise comparison; `len == 0` means no filter.
    pub(crate) fn kernel_env_filter(
        &self,
    ) -> ([u64; ENV_FILTER_WORDS], [u64; ENV_FILTER_WORDS], u32) {
        let mut bytes = [0u8; ENV_FILTER_LEN];
        let mut mask = [0u8; ENV_FILTER_LEN];
        let Some(prefix) = &self.env_prefix else {
            return ([0; ENV_FILTER_WORDS], [0; ENV_FILTER_WORDS], 0);
        };
        for (i, b) in prefix.iter().enumerate() {
            bytes[i] = *b;
            mask[i] = 0xff;
        }
        let words = |raw: &[u8; ENV_FILTER_LEN]| {
            let mut out = [0u64; ENV_FILTER_WORDS];
            for (word, chunk) in out.iter_mut().zip(raw.chunks_exact(8)) {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                *word = u64::from_ne_bytes(w);
            }
            out
        };
        let len = u32::try_from(prefix.len()).expect("validated shorter than ENV_FILTER_LEN");
        (words(&bytes), words(&mask), len)
    }

    /// Keys for the probe's ignored-executables map.
    pub(crate) fn ignored_exe_keys(&self) -> impl Iterator<Item = [u8; IGNORED_EXE_LEN]> + '_ {
        self.ignored_exes.iter().map(|exe| {
            let mut key = [0u8; IGNORED_EXE_LEN];
            key[..exe.len()].copy_from_slice(exe.as_bytes());
            key
        })
    }

    /// True when `exe` is on the ignore list.
    pub fn ignores_exe(&self, exe: &Path) -> bool {
        self.ignored_exes
            .iter()
            .any(|ignored| Path::new(ignored) == exe)
    }

    /// True when no environment filter is set or the NUL-separated `environ` (as in
    /// `/proc/<pid>/environ`) holds the variable.
    pub fn env_matches(&self, environ: &[u8]) -> bool {
        match &self.env_prefix {
            None => true,
            Some(prefix) => environ
                .split(|b| *b == 0)
                .any(|entry| entry.starts_with(prefix)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_filter_matches_whole_names_only() {
        let filter = ProcessFilter::new(Some("ODIGOS_POD_NAME"), &[]).unwrap();
        assert!(filter.env_matches(b"PATH=/bin\0ODIGOS_POD_NAME=web-1\0"));
        assert!(filter.env_matches(b"ODIGOS_POD_NAME=\0"));
        assert!(!filter.env_matches(b"ODIGOS_POD_NAMESPACE=x\0"));
        assert!(!filter.env_matches(b"X_ODIGOS_POD_NAME=x\0"));
        assert!(!filter.env_matches(b""));
        assert!(ProcessFilter::standalone().env_matches(b""));
        assert_eq!(filter.env_var(), Some("ODIGOS_POD_NAME"));
    }

    #[test]
    fn kernel_filter_words_encode_prefix_and_mask() {
        let filter = ProcessFilter::new(Some("AB"), &[]).unwrap();
        let (words, mask, len) = filter.kernel_env_filter();
        assert_eq!(len, 3);
        assert_eq!(words[0].to_ne_bytes()[..4], *b"AB=\0");
        assert_eq!(mask[0].to_ne_bytes(), [0xff, 0xff, 0xff, 0, 0, 0, 0, 0]);
        assert_eq!(&mask[1..], &[0, 0, 0]);
        assert_eq!(ProcessFilter::standalone().kernel_env_filter().2, 0);
    }

    #[test]
    fn rejects_what_the_kernel_buffers_cannot_hold() {
        let long = "X".repeat(ENV_FILTER_LEN);
        assert!(matches!(
            ProcessFilter::new(Some(&long), &[]),
            Err(FilterError::BadEnvName(_))
        ));
        assert!(ProcessFilter::new(Some("A=B"), &[]).is_err());
        assert!(ProcessFilter::new(Some(""), &[]).is_err());
        let relative = vec!["bin/sh".to_owned()];
        assert!(matches!(
            ProcessFilter::new(None, &relative),
            Err(FilterError::BadIgnoredExe(_))
        ));
        let long_path = vec![format!("/{}", "a".repeat(IGNORED_EXE_LEN))];
        assert!(ProcessFilter::new(None, &long_path).is_err());
        let many: Vec<String> = (0..=IGNORED_EXES_MAX).map(|i| format!("/x{i}")).collect();
        assert_eq!(
            ProcessFilter::new(None, &many),
            Err(FilterError::TooManyIgnored(33))
        );
    }

    #[test]
    fn ignore_list_keys_are_nul_padded() {
        let filter = ProcessFilter::standalone();
        assert!(filter.ignores_exe(Path::new("/pause")));
        assert!(filter.ignores_exe(Path::new("/usr/bin/bash")));
        assert!(!filter.ignores_exe(Path::new("/usr/bin/python3")));
        let key = filter.ignored_exe_keys().next().unwrap();
        assert_eq!(&key[..7], b"/pause\0");
        assert!(key[6..].iter().all(|b| *b == 0));
    }
}
