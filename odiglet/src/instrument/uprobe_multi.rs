//! `BPF_TRACE_UPROBE_MULTI` links (Linux 6.6+), which aya 0.14 does not create: one link
//! attaches a program at many offsets of one file, for one process.
//!
//! Closing a perf-event uprobe waits for a kernel grace period under a global mutex, per probe
//! point; closing a multi link waits once for all its points, so detaching a process costs one
//! wait per program instead of one per entry and RET.
#![expect(
    unsafe_code,
    reason = "the one bpf(2) call aya 0.14 does not wrap; all of odiglet's unsafe is here"
)]

use std::{
    ffi::CString,
    io, mem,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use aya_obj::generated::{
    bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_attr, bpf_cmd::BPF_LINK_CREATE,
};

/// An attached uprobe-multi link; dropping it detaches.
#[derive(Debug)]
pub struct MultiLink(#[expect(dead_code, reason = "held for its drop")] OwnedFd);

/// Attaches `program` (loaded with `UProbe::load_multi`) at `offsets` of `exe`, firing only in
/// process `pid` (its memory alone gets the breakpoints).
pub fn attach(
    program: BorrowedFd<'_>,
    exe: &Path,
    offsets: &[u64],
    pid: u32,
) -> io::Result<MultiLink> {
    let path = CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let count = u32::try_from(offsets.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many offsets"))?;
    // SAFETY: an all-zero `bpf_attr` is its documented "unset" state.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: writes to plain integer fields of the `link_create` variant of the union.
    unsafe {
        let link = &mut attr.link_create;
        link.__bindgen_anon_1.prog_fd = program.as_raw_fd() as u32;
        link.attach_type = BPF_TRACE_UPROBE_MULTI as u32;
        let multi = &mut link.__bindgen_anon_3.uprobe_multi;
        multi.path = path.as_ptr() as u64;
        multi.offsets = offsets.as_ptr() as u64;
        multi.cnt = count;
        multi.pid = pid;
    }
    // SAFETY: `attr` is a valid `BPF_LINK_CREATE` request whose pointers (path, offsets)
    // outlive the call; the kernel copies what it keeps.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE as libc::c_long,
            &raw const attr,
            mem::size_of::<bpf_attr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd =
        i32::try_from(fd).map_err(|_| io::Error::other("the kernel returned no descriptor"))?;
    // SAFETY: a new descriptor the kernel just handed to us alone.
    Ok(MultiLink(unsafe { OwnedFd::from_raw_fd(fd) }))
}
