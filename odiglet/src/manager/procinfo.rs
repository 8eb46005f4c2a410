//! What the manager reads about a candidate process before instrumenting it: whether it is Go
//! (the same detection as runtime inspection), and the facts its resource attributes and
//! PID-reuse checks need. Synchronous `/proc` reads, run on the blocking pool.

use std::{os::unix::fs::MetadataExt, path::Path};

use tracing::debug;

use crate::inspect::{InspectError, Language, ProcessContext, language};

/// Longest `OTEL_RESOURCE_ATTRIBUTES` value honoured, and most pairs taken from it.
const MAX_RESOURCE_ATTRIBUTES: usize = 64;
const ENV_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// Facts about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessFacts {
    pub pid: u32,
    /// PID in the process's own namespace (`NStgid`), when it differs from the host PID.
    pub vpid: Option<u32>,
    /// Start time in clock ticks since boot: with the PID, the process's identity.
    pub start_time: u64,
    pub language: Language,
    /// The executable as the process sees it.
    pub executable_path: String,
    /// (device, inode, mtime) of the executable: equal files share one binary analysis.
    pub executable_id: Option<(u64, u64, i64)>,
    /// First word of the command line (`process.command`).
    pub command: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES` of the process, in order.
    pub resource_attributes: Vec<(String, String)>,
}

/// Reads the facts of `pid` under `proc_root`.
pub fn read(proc_root: &Path, pid: u32) -> Result<ProcessFacts, InspectError> {
    let ctx = ProcessContext::open(proc_root, pid)?;
    let start_time = start_time(proc_root, pid).ok_or(InspectError::NoSuchProcess { pid })?;
    let language = language::detect(&ctx).language;
    let status = ctx.read_proc_file("status").unwrap_or_default();
    let vpid = namespace_pid(&String::from_utf8_lossy(&status)).filter(|vpid| *vpid != pid);
    let executable_id = std::fs::metadata(proc_root.join(format!("{pid}/exe")))
        .ok()
        .map(|meta| (meta.dev(), meta.ino(), meta.mtime()));
    let command = ctx
        .cmdline
        .split(' ')
        .next()
        .filter(|word| !word.is_empty())
        .map(str::to_owned);
    let environ = ctx.read_proc_file("environ").unwrap_or_default();
    let resource_attributes = environ
        .split(|b| *b == 0)
        .find_map(|entry| {
            entry
                .strip_prefix(ENV_RESOURCE_ATTRIBUTES.as_bytes())?
                .strip_prefix(b"=")
        })
        .map(|value| parse_resource_attributes(&String::from_utf8_lossy(value)))
        .unwrap_or_default();
    Ok(ProcessFacts {
        pid,
        vpid,
        start_time,
        language,
        executable_path: ctx.exe.to_string_lossy().into_owned(),
        executable_id,
        command,
        resource_attributes,
    })
}

/// Start time of `pid` (field 22 of `stat`), `None` once it is gone.
pub fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))).ok()?;
    parse_start_time(&stat)
}

/// Whether `pid` has exited or is exiting: gone from the proc root, a zombie waiting to be
/// reaped, or past the start of its exit.
pub fn exited(proc_root: &Path, pid: u32) -> bool {
    std::fs::read_to_string(proc_root.join(format!("{pid}/stat")))
        .map_or(true, |stat| is_dead_state(&stat))
}

/// `task->flags` bit set once a task starts exiting: its memory (and so its `environ`) can be
/// gone while its state still reads running.
const PF_EXITING: u64 = 0x4;

fn is_dead_state(stat: &str) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return true;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    // `flags` is field 9, the sixth after the state (field 3).
    let flags = fields.nth(5).and_then(|flags| flags.parse::<u64>().ok());
    matches!(state, None | Some("Z" | "X")) || flags.is_some_and(|flags| flags & PF_EXITING != 0)
}

/// The comm field may hold spaces and parentheses: fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); start time is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The innermost-namespace PID: the last value of `NStgid` in `status`.
fn namespace_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("NStgid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Parses `key1=value1,key2=value2` as the OpenTelemetry SDKs do: values percent-decoded,
/// surrounding spaces trimmed; malformed pairs are skipped (and logged), never fatal.
pub fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    let mut attributes = Vec::new();
    for pair in text.split(',').filter(|pair| !pair.trim().is_empty()) {
        if attributes.len() == MAX_RESOURCE_ATTRIBUTES {
            debug!("more than {MAX_RESOURCE_ATTRIBUTES} resource attributes; the rest ignored");
            break;
        }
        let Some((key, value)) = pair.split_once('=') else {
            debug!(pair, "malformed OTEL_RESOURCE_ATTRIBUTES pair");
            continue;
        };
        let key = key.trim();
        match percent_decode(value.trim()) {
            Some(value) if !key.is_empty() => attributes.push((key.to_owned(), value)),
            _ => debug!(pair, "malformed OTEL_RESOURCE_ATTRIBUTES pair"),
        }
    }
    attributes
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_comm_names() {
        let stat = "4242 (my) app (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn zombies_exiting_processes_and_unreadable_stats_count_as_exited() {
        assert!(!is_dead_state("42 (a) b) S 1 42 42 0 -1"));
        assert!(is_dead_state("42 (true) Z 1 42 42 0 -1"));
        assert!(is_dead_state("42 (true) X 1"));
        assert!(is_dead_state("garbage"));
        // Running, but exiting (PF_EXITING in `flags`, field 9), or not.
        assert!(is_dead_state("42 (true) R 1 42 42 0 -1 4194564 0 0"));
        assert!(!is_dead_state("42 (true) R 1 42 42 0 -1 4194560 0 0"));
        assert!(!exited(Path::new("/proc"), std::process::id()));
        assert!(exited(Path::new("/nonexistent/proc"), 1));
    }

    #[test]
    fn namespace_pid_is_the_innermost() {
        let status = "Name:\tapp\nTgid:\t4242\nNStgid:\t4242\t7\nPid:\t4242\n";
        assert_eq!(namespace_pid(status), Some(7));
        assert_eq!(namespace_pid("NStgid:\t99\n"), Some(99));
        assert_eq!(namespace_pid("Name:\tx\n"), None);
    }

    #[test]
    fn resource_attributes_decode_and_skip_malformed_pairs() {
        let parsed = parse_resource_attributes(
            " deployment.environment = prod ,broken,team=a%2Cb%20c,=novalue,bad=%zz,,x=1",
        );
        assert_eq!(
            parsed,
            [
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "a,b c".to_owned()),
                ("x".to_owned(), "1".to_owned()),
            ]
        );
        let many = (0..100)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            parse_resource_attributes(&many).len(),
            MAX_RESOURCE_ATTRIBUTES
        );
    }
}
