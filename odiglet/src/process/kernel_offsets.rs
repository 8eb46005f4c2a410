//! Offsets of the kernel-structure fields the lifecycle probe reads, resolved from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`). This is what CO-RE relocations do for C programs.

use std::path::{Path, PathBuf};

use btf_rs::{Backend, Btf, Type};
use odiglet_common::lifecycle::KernelOffsets;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum KernelOffsetsError {
    #[error("cannot read kernel BTF from {path} (is CONFIG_DEBUG_INFO_BTF enabled?)")]
    Read {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no struct `{0}`")]
    MissingStruct(&'static str),
    #[error("kernel BTF struct `{strukt}` has no field `{field}`")]
    MissingField {
        strukt: &'static str,
        field: &'static str,
    },
    #[error("offset of `{strukt}.{field}` does not fit the probe's 32-bit offsets")]
    TooLarge {
        strukt: &'static str,
        field: &'static str,
    },
}

/// Opens the BTF at `path` mapped, not parsed: btf-rs's parsing backend holds ~40 MiB of heap
/// for a 5.5 MiB vmlinux, which glibc keeps long after the few lookups here. Kernels before
/// 6.16 cannot map `/sys/kernel/btf/vmlinux`; those get the parsing backend.
fn open(path: &Path) -> Result<Btf, KernelOffsetsError> {
    Btf::from_file_with_backend(path, Backend::Mmap)
        .or_else(|_| Btf::from_file(path))
        .map_err(|source| KernelOffsetsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Resolves the offsets from the BTF file at `path`.
pub fn resolve(path: &Path) -> Result<KernelOffsets, KernelOffsetsError> {
    let btf = open(path)?;
    let field = |strukt, field| field_offset(&btf, strukt, field);
    Ok(KernelOffsets {
        task_tgid: field("task_struct", "tgid")?,
        task_pid: field("task_struct", "pid")?,
        task_real_parent: field("task_struct", "real_parent")?,
        task_mm: field("task_struct", "mm")?,
        task_thread_pid: field("task_struct", "thread_pid")?,
        mm_arg_start: field("mm_struct", "arg_start")?,
        mm_arg_end: field("mm_struct", "arg_end")?,
        mm_env_start: field("mm_struct", "env_start")?,
        mm_env_end: field("mm_struct", "env_end")?,
        pid_level: field("pid", "level")?,
        pid_numbers: field("pid", "numbers")?,
        upid_size: struct_size(&btf, "upid")?,
        upid_nr: field("upid", "nr")?,
        bprm_interp: field("linux_binprm", "interp")?,
    })
}

fn find_struct(btf: &Btf, name: &'static str) -> Result<btf_rs::Struct, KernelOffsetsError> {
    btf.resolve_types_by_name(name)
        .map_err(|_| KernelOffsetsError::MissingStruct(name))?
        .into_iter()
        // A name can also belong to a forward declaration or a function; keep the definition.
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or(KernelOffsetsError::MissingStruct(name))
}

fn struct_size(btf: &Btf, name: &'static str) -> Result<u32, KernelOffsetsError> {
    let s = find_struct(btf, name)?;
    u32::try_from(s.size()).map_err(|_| KernelOffsetsError::TooLarge {
        strukt: name,
        field: "",
    })
}

/// Byte offset of `field` in `strukt`, looking through anonymous struct and union members
/// (newer kernels group `mm_struct`'s fields in an anonymous struct, for example).
fn field_offset(
    btf: &Btf,
    strukt: &'static str,
    field: &'static str,
) -> Result<u32, KernelOffsetsError> {
    let s = find_struct(btf, strukt)?;
    let bits = find_member_bits(btf, &s.members, field, 0)
        .ok_or(KernelOffsetsError::MissingField { strukt, field })?;
    u32::try_from(bits / 8).map_err(|_| KernelOffsetsError::TooLarge { strukt, field })
}

/// Anonymous nesting deeper than this is not something kernels do; it bounds the recursion.
const MAX_ANONYMOUS_DEPTH: usize = 8;

fn find_member_bits(
    btf: &Btf,
    members: &[btf_rs::Member],
    field: &str,
    depth: usize,
) -> Option<u64> {
    if depth > MAX_ANONYMOUS_DEPTH {
        return None;
    }
    for member in members {
        let name = btf.resolve_name(member).unwrap_or_default();
        let offset = u64::from(member.bit_offset());
        if name == field {
            return Some(offset);
        }
        if name.is_empty() {
            let nested = match btf.resolve_chained_type(member) {
                Ok(Type::Struct(s) | Type::Union(s)) => s,
                _ => continue,
            };
            if let Some(inner) = find_member_bits(btf, &nested.members, field, depth + 1) {
                return Some(offset + inner);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF resolves and gives plausible values. Skips (with a message)
    /// only where the kernel publishes no BTF, which this project's machines always do.
    #[test]
    fn resolves_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI kernel must have BTF"
            );
            return;
        }
        let off = resolve(path).unwrap();
        assert_ne!(off.task_tgid, 0);
        assert_eq!(
            off.task_tgid,
            off.task_pid + 4,
            "pid and tgid are adjacent pid_t fields"
        );
        assert_eq!(off.mm_arg_end, off.mm_arg_start + 8);
        assert_eq!(off.mm_env_end, off.mm_env_start + 8);
        assert_eq!(off.upid_nr, 0);
        assert_eq!(
            off.upid_size, 16,
            "struct upid is {{ int nr; struct pid_namespace *ns; }}"
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = resolve(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }
}
