//! Go instrumentation: `net/http` here, `database/sql` in [`sql`] and gRPC in [`grpc`], sharing
//! the per-process offsets, the span ring buffer and the active span of each goroutine.
//!
//! `net/http`: uprobes at the entry and at every RET (never uretprobes:
//! they corrupt Go stacks) of `serverHandler.ServeHTTP` and `(*Transport).roundTrip`. The
//! incoming `traceparent` is looked up in `Request.Header` at the server entry (bucket maps
//! before Go 1.24, swiss tables since), so a request costs two traps whatever its headers.
//!
//! One object serves every Go process: struct offsets come from `GO_PROCESSES`, keyed by PID
//! and written by user space, which also says which libraries are enabled. Calls in flight
//! are keyed by goroutine; a second entry on a goroutine already in flight (Go's morestack
//! restarts a function from its entry) is refused.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        BPF_RB_RING_SIZE, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_TCP_CONNECT_CB, pt_regs,
        sk_action::SK_PASS,
    },
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        generated::{
            bpf_get_socket_cookie, bpf_loop, bpf_msg_pull_data, bpf_probe_read_kernel,
            bpf_probe_read_user,
        },
    },
    macros::{map, sk_msg, sock_ops, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, SockHash},
    programs::{ProbeContext, SkMsgContext, SockOpsContext},
};
use odiglet_common::go::{
    ClientCall, GO_BUCKET_ELEMS, GO_BUCKET_KEYS, GO_BUCKET_OVERFLOW, GO_BUCKET_SIZE,
    GO_COUNTER_DOUBLE_ENTRY, GO_COUNTER_INJECT_FAILED, GO_COUNTER_INJECT_SKIPPED,
    GO_COUNTER_INJECTED, GO_COUNTER_MISSING_ENTRY, GO_COUNTER_READ_FAILED, GO_COUNTER_RINGBUF_FULL,
    GO_COUNTER_TRACEPARENT_UNSEARCHED, GO_COUNTERS_LEN, GO_GROUP_SIZE, GO_GROUP_SLOT_ELEM,
    GO_GROUP_SLOT_SIZE, GO_GROUP_SLOTS_OFFSET, GO_INFLIGHT_MAX, GO_LIBRARY_GRPC_PROPAGATION,
    GO_LIBRARY_HTTP_CLIENT, GO_LIBRARY_HTTP_PROPAGATION, GO_LIBRARY_HTTP_SERVER, GO_MAP_COUNT,
    GO_MAP_SLOTS, GO_OUTGOING_MAX, GO_PROCESSES_MAX, GO_SPAN_HTTP_CLIENT, GO_SPAN_HTTP_SERVER,
    GoOffsets, GoroutineKey, HEADER_MAP_BUCKETS_MAX, HEADER_MAP_GROUPS_MAX, HEADER_MAP_TABLES_MAX,
    HTTP_ADDR_LEN, HTTP_CLIENT_HOST, HTTP_CLIENT_METHOD, HTTP_CLIENT_PATH, HTTP_CLIENT_PROTO,
    HTTP_CLIENT_SCHEME, HTTP_CLIENT_STRINGS_OFFSET, HTTP_HOST_LEN, HTTP_METHOD_LEN, HTTP_PATH_LEN,
    HTTP_PROTO_LEN, HTTP_ROUTE_LEN, HTTP_SCHEME_LEN, HTTP_SERVER_HOST, HTTP_SERVER_METHOD,
    HTTP_SERVER_PATH, HTTP_SERVER_PROTO, HTTP_SERVER_REMOTE_ADDR, HTTP_SERVER_ROUTE,
    HTTP_SERVER_STRINGS_OFFSET, OFFSET_NONE, SPAN_FLAG_ERROR, SPAN_FLAG_HAS_PARENT,
    SPAN_FLAG_PARENT_REMOTE, SPAN_FLAG_TRUNCATED, ServerCall, SpanContext, SpanHeader,
    TRACEPARENT_HEADER_LEN, TRACEPARENT_HPACK_LEN, connection_key,
};
use odiglet_common::traceparent::{TRACEPARENT_VALUE_LEN, parse_traceparent};
use odiglet_ebpf::{go_register, goroutine, random_u64, read_go_string, read_user_at};
use packed::StringWriter;
use snapshot::{MAP_BYTES, REQUEST_BYTES, SLOT_MAP, SLOT_REQUEST, SLOT_URL, Snapshot, URL_BYTES};

// The crate root's modules resolve beside it: keep the Go probes together under go_http/.
#[path = "go_http/grpc.rs"]
mod grpc;
#[path = "go_http/packed.rs"]
mod packed;
#[path = "go_http/snapshot.rs"]
mod snapshot;
#[path = "go_http/sql.rs"]
mod sql;

/// Finished spans for user space. Sized by user space at load time.
#[map]
static GO_SPANS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Struct offsets and enabled libraries per instrumented process.
#[map]
static GO_PROCESSES: HashMap<u32, GoOffsets> = HashMap::with_max_entries(GO_PROCESSES_MAX, 0);

#[map]
static GO_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GO_COUNTERS_LEN, 0);

/// Server calls in flight. LRU: a call that never returns (panic, Goexit) is evicted.
#[map]
static SERVER_CALLS: LruHashMap<GoroutineKey, ServerCall> =
    LruHashMap::with_max_entries(GO_INFLIGHT_MAX, 0);

/// Client calls in flight.
#[map]
static CLIENT_CALLS: LruHashMap<GoroutineKey, ClientCall> =
    LruHashMap::with_max_entries(GO_INFLIGHT_MAX, 0);

/// The gRPC server span active on a goroutine: the parent of client calls it makes (a
/// `net/http` server span is found in `SERVER_CALLS` instead, see `active_span`).
#[map]
static ACTIVE_SPANS: LruHashMap<GoroutineKey, SpanContext> =
    LruHashMap::with_max_entries(GO_INFLIGHT_MAX, 0);

/// Per-CPU space to build call state: too large for the 512-byte stack.
#[map]
static SERVER_SCRATCH: PerCpuArray<ServerCall> = PerCpuArray::with_max_entries(1, 0);
#[map]
static CLIENT_SCRATCH: PerCpuArray<ClientCall> = PerCpuArray::with_max_entries(1, 0);

/// `-EEXIST` from a map insert with `BPF_NOEXIST`.
const EEXIST: i32 = -17;

fn count(index: u32) {
    if let Some(counter) = GO_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot; nothing else writes it concurrently.
        unsafe { *counter += 1 };
    }
}

/// A submit wakes the reader once unread data passes `ring size >> WAKEUP_SHIFT` (1/8 of the
/// ring: 64 KiB of the default 512 KiB, about 350 typical server spans). Below that, spans
/// wait for the reader's timer (`odiglet::ring::DRAIN_INTERVAL`), so a busy server pays no
/// wakeup (irq_work, epoll wake, context switch) per span, and the 7/8 left absorb bursts
/// while the woken reader gets scheduled. Relative to the ring's actual size, so it holds whatever size user space set.
const WAKEUP_SHIFT: u64 = 3;

/// Copies the first `len` bytes of a finished span record into `GO_SPANS` (a record ends
/// after its last string; `len` is bounded by the record's size here), waking the reader only when the ring is filling up. Every span
/// submit goes through here; a full ring is counted.
#[inline(always)]
fn submit_record<T>(record: &T, len: usize) {
    let len = if len > size_of::<T>() {
        size_of::<T>()
    } else {
        len
    };
    // SAFETY: `len` bytes of `record`, which has at least that many; plain data.
    let bytes = unsafe { core::slice::from_raw_parts((record as *const T).cast::<u8>(), len) };
    let unread = GO_SPANS.query(u64::from(BPF_RB_AVAIL_DATA));
    let size = GO_SPANS.query(u64::from(BPF_RB_RING_SIZE));
    let flags = if unread >= size >> WAKEUP_SHIFT {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if GO_SPANS.output::<[u8]>(bytes, u64::from(flags)).is_err() {
        count(GO_COUNTER_RINGBUF_FULL);
    }
}

fn regs(ctx: &ProbeContext) -> &pt_regs {
    // SAFETY: a uprobe's context is the registers of the probed thread, valid for the run.
    unsafe { &*ctx.regs }
}

fn current_key(ctx: &ProbeContext) -> GoroutineKey {
    GoroutineKey {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        reserved: 0,
        goroutine: goroutine(regs(ctx)),
    }
}

fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The offsets of an instrumented process with `library` enabled, in place in the map: a
/// copy would cost 180 bytes of loads and stores on every hit.
fn offsets_for(pid: u32, library: u32) -> Option<&'static GoOffsets> {
    // SAFETY: a hash map value stays valid for the rest of the program's run (RCU), even if
    // user space deletes or replaces it meanwhile; its fields are plain integers.
    let offsets = unsafe { GO_PROCESSES.get(pid) }?;
    (offsets.enabled_libraries & library != 0).then_some(offsets)
}

/// A return whose entry was not seen, counted only while the process and library are
/// instrumented: a detached process or a library switched off skips entries on purpose.
fn count_missing_entry(pid: u32, library: u32) {
    if offsets_for(pid, library).is_some() {
        count(GO_COUNTER_MISSING_ENTRY);
    }
}

fn new_context(trace_id: Option<[u8; 16]>) -> SpanContext {
    let trace_id = trace_id.unwrap_or_else(|| {
        let (hi, lo) = (random_u64(), random_u64());
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&hi.to_be_bytes());
        id[8..].copy_from_slice(&lo.to_be_bytes());
        id
    });
    SpanContext {
        trace_id,
        span_id: random_u64().to_be_bytes(),
        trace_flags: 1,
        reserved: [0; 7],
    }
}

/// The span active on a goroutine: a gRPC server span (`ACTIVE_SPANS`) or the `net/http`
/// server call in flight, which is not copied into `ACTIVE_SPANS` to spare every request an
/// insert and a delete.
fn active_span(key: &GoroutineKey) -> Option<SpanContext> {
    // SAFETY: lookups whose values are copied out at once.
    unsafe {
        ACTIVE_SPANS
            .get(key)
            .copied()
            .or_else(|| SERVER_CALLS.get(key).map(|call| call.span.header.context))
    }
}

/// Makes a client span the child of the span active on its goroutine (a new trace without one).
fn join_active_span(header: &mut SpanHeader, key: &GoroutineKey) {
    let parent = active_span(key);
    if let Some(parent) = parent {
        header.parent = parent;
        header.flags |= SPAN_FLAG_HAS_PARENT;
    }
    header.context = new_context(parent.map(|p| p.trace_id));
}

fn init_header(header: &mut SpanHeader, kind: u32, key: &GoroutineKey) {
    header.kind = kind;
    header.pid = key.pid;
    header.flags = 0;
    header.reserved = 0;
    header.start_boot_ns = now();
    header.end_boot_ns = 0;
    header.goroutine = key.goroutine;
    header.parent = SpanContext::default();
}

/// Copies a Go string field at `base + offset` (skipped when the field does not exist or the
/// base pointer is nil); sets `SPAN_FLAG_TRUNCATED` when cut.
///
/// # Safety
/// As `read_go_string`.
#[inline(always)]
unsafe fn copy_string_field<const N: usize>(
    base: u64,
    offset: u32,
    dst: &mut [u8; N],
    len: &mut u16,
    flags: &mut u32,
) {
    *len = 0;
    if base == 0 || offset == OFFSET_NONE {
        return;
    }
    // SAFETY: forwarded contract.
    match unsafe { read_go_string(base + u64::from(offset), dst) } {
        Ok((n, truncated)) => {
            *len = n;
            if truncated {
                *flags |= SPAN_FLAG_TRUNCATED;
            }
        }
        Err(_) => count(GO_COUNTER_READ_FAILED),
    }
}

/// Reads a pointer field; nil when the field does not exist or the read fails.
///
/// # Safety
/// As `read_user_at`.
#[inline(always)]
unsafe fn pointer_field(base: u64, offset: u32) -> u64 {
    if base == 0 || offset == OFFSET_NONE {
        return 0;
    }
    // SAFETY: forwarded contract.
    unsafe { read_user_at::<u64>(base, offset) }.unwrap_or(0)
}

// === net/http server ===

#[uprobe]
pub fn odiglet_go_http_server_entry(ctx: ProbeContext) -> u32 {
    let _ = try_server_entry(&ctx);
    0
}

fn try_server_entry(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_HTTP_SERVER) else {
        return Ok(());
    };
    let call = SERVER_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch, used only during this run.
    let call = unsafe { &mut *call };
    // serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request):
    // sh = RAX, rw = (RBX itab, RCX data), req = RDI.
    let r = regs(ctx);
    call.request = go_register(r, 3);
    call.response = go_register(r, 2);
    let span = &mut call.span;
    init_header(&mut span.header, GO_SPAN_HTTP_SERVER, &key);

    // Method, URL, proto, header map, host and remote address: one read.
    let req = Snapshot::<REQUEST_BYTES>::take(SLOT_REQUEST, call.request).ok_or(-1)?;
    let parent = incoming_parent(&req, off);
    if let Some(parent) = parent {
        span.header.parent = parent;
        span.header.flags |= SPAN_FLAG_HAS_PARENT | SPAN_FLAG_PARENT_REMOTE;
    }
    span.header.context = new_context(parent.map(|p| p.trace_id));

    let mut strings = StringWriter::new(&mut span.lens, &mut span.strings);
    // SAFETY: user-memory reads of the request the probed function received.
    unsafe {
        strings.push(
            HTTP_SERVER_METHOD,
            HTTP_METHOD_LEN,
            req.string(off.request_method),
        );
        let url = req.word(off.request_url).unwrap_or(0);
        strings.push_field(HTTP_SERVER_PATH, HTTP_PATH_LEN, url, off.url_path);
        strings.push(
            HTTP_SERVER_HOST,
            HTTP_HOST_LEN,
            req.string(off.request_host),
        );
        strings.push(
            HTTP_SERVER_REMOTE_ADDR,
            HTTP_ADDR_LEN,
            req.string(off.request_remote_addr),
        );
        strings.push(
            HTTP_SERVER_PROTO,
            HTTP_PROTO_LEN,
            req.string(off.request_proto),
        );
    }
    if strings.finish().1 {
        span.header.flags |= SPAN_FLAG_TRUNCATED;
    }
    span.status_code = 0;
    insert_call(&SERVER_CALLS, &key, call)
}

/// Files a call in flight unless its goroutine already has one (Go's morestack restarts a
/// function from its entry): `BPF_NOEXIST` makes the check and the insert one map operation.
#[inline(always)]
fn insert_call<V>(
    calls: &LruHashMap<GoroutineKey, V>,
    key: &GoroutineKey,
    call: &V,
) -> Result<(), i32> {
    match calls.insert(key, call, u64::from(BPF_NOEXIST)) {
        Err(EEXIST) => {
            count(GO_COUNTER_DOUBLE_ENTRY);
            Ok(())
        }
        result => result,
    }
}

#[uprobe]
pub fn odiglet_go_http_server_return(ctx: ProbeContext) -> u32 {
    let _ = try_server_return(&ctx);
    0
}

fn try_server_return(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(call) = SERVER_CALLS.get_ptr_mut(key) else {
        count_missing_entry(key.pid, GO_LIBRARY_HTTP_SERVER);
        return Ok(());
    };
    // SAFETY: the map value stays valid until we remove it below, after its last use.
    let call = unsafe { &mut *call };
    if let Some(off) = offsets_for(key.pid, GO_LIBRARY_HTTP_SERVER) {
        let span = &mut call.span;
        span.header.end_boot_ns = now();
        let mut strings =
            StringWriter::resume(&mut span.lens, &mut span.strings, HTTP_SERVER_ROUTE);
        // SAFETY: user-memory reads of the objects the call received.
        unsafe {
            if off.response_status != OFFSET_NONE && call.response != 0 {
                match read_user_at::<u64>(call.response, off.response_status) {
                    Ok(status) => span.status_code = status as u32,
                    Err(_) => count(GO_COUNTER_READ_FAILED),
                }
            }
            // ServeMux sets the pattern while routing, so it is read on the way out.
            if off.request_pattern != OFFSET_NONE {
                strings.push_field(
                    HTTP_SERVER_ROUTE,
                    HTTP_ROUTE_LEN,
                    call.request,
                    off.request_pattern,
                );
            } else {
                let pattern = pointer_field(call.request, off.request_pat);
                strings.push_field(HTTP_SERVER_ROUTE, HTTP_ROUTE_LEN, pattern, off.pattern_str);
            }
        }
        let (used, truncated) = strings.finish();
        if truncated {
            span.header.flags |= SPAN_FLAG_TRUNCATED;
        }
        submit_record(span, HTTP_SERVER_STRINGS_OFFSET + used);
    }
    let _ = SERVER_CALLS.remove(key);
    Ok(())
}

// === net/http client ===

#[uprobe]
pub fn odiglet_go_http_client_entry(ctx: ProbeContext) -> u32 {
    let _ = try_client_entry(&ctx);
    0
}

fn try_client_entry(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_HTTP_CLIENT) else {
        return Ok(());
    };
    let call = CLIENT_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch, used only during this run.
    let call = unsafe { &mut *call };
    // (*Transport).roundTrip(t *Transport, req *Request): t = RAX, req = RBX.
    call.request = go_register(regs(ctx), 1);
    let span = &mut call.span;
    init_header(&mut span.header, GO_SPAN_HTTP_CLIENT, &key);
    join_active_span(&mut span.header, &key);

    let req = Snapshot::<REQUEST_BYTES>::take(SLOT_REQUEST, call.request).ok_or(-1)?;
    let url = Snapshot::<URL_BYTES>::take(SLOT_URL, req.word(off.request_url).unwrap_or(0));
    let url_string = |offset| url.as_ref().and_then(|url| url.string(offset));
    let mut strings = StringWriter::new(&mut span.lens, &mut span.strings);
    // SAFETY: user-memory reads of the request the probed function received.
    unsafe {
        strings.push(
            HTTP_CLIENT_METHOD,
            HTTP_METHOD_LEN,
            req.string(off.request_method),
        );
        strings.push(
            HTTP_CLIENT_SCHEME,
            HTTP_SCHEME_LEN,
            url_string(off.url_scheme),
        );
        strings.push(HTTP_CLIENT_HOST, HTTP_HOST_LEN, url_string(off.url_host));
        strings.push(HTTP_CLIENT_PATH, HTTP_PATH_LEN, url_string(off.url_path));
    }
    if strings.finish().1 {
        span.header.flags |= SPAN_FLAG_TRUNCATED;
    }
    span.status_code = 0;
    span.reserved = 0;
    insert_call(&CLIENT_CALLS, &key, call)
}

#[uprobe]
pub fn odiglet_go_http_client_return(ctx: ProbeContext) -> u32 {
    let _ = try_client_return(&ctx);
    0
}

fn try_client_return(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(call) = CLIENT_CALLS.get_ptr_mut(key) else {
        count_missing_entry(key.pid, GO_LIBRARY_HTTP_CLIENT);
        return Ok(());
    };
    // SAFETY: the map value stays valid until we remove it below, after its last use.
    let call = unsafe { &mut *call };
    if let Some(off) = offsets_for(key.pid, GO_LIBRARY_HTTP_CLIENT) {
        // Results: *Response = RAX, error = (RBX itab, RCX data).
        let r = regs(ctx);
        let (response, error_type) = (go_register(r, 0), go_register(r, 1));
        let span = &mut call.span;
        span.header.end_boot_ns = now();
        if error_type != 0 {
            span.header.flags |= SPAN_FLAG_ERROR;
        }
        let mut strings =
            StringWriter::resume(&mut span.lens, &mut span.strings, HTTP_CLIENT_PROTO);
        // SAFETY: user-memory reads of the response the call returned.
        unsafe {
            if response != 0 && off.client_response_status_code != OFFSET_NONE {
                match read_user_at::<u64>(response, off.client_response_status_code) {
                    Ok(status) => span.status_code = status as u32,
                    Err(_) => count(GO_COUNTER_READ_FAILED),
                }
            }
            strings.push_field(
                HTTP_CLIENT_PROTO,
                HTTP_PROTO_LEN,
                response,
                off.client_response_proto,
            );
        }
        let (used, truncated) = strings.finish();
        if truncated {
            span.header.flags |= SPAN_FLAG_TRUNCATED;
        }
        submit_record(span, HTTP_CLIENT_STRINGS_OFFSET + used);
    }
    let _ = CLIENT_CALLS.remove(key);
    Ok(())
}

// === incoming trace context ===
//
// `Request.Header` is a `map[string][]string` whose keys textproto canonicalized, so the header
// is the key `Traceparent`. Rather than hash (the seed and hash function are the runtime's),
// the probe walks the map's storage and compares every full slot whose key is 11 bytes long:
// before Go 1.24 the bucket array (with overflow chains, and the old array while the map
// grows); since, the swiss-table directory, each table's groups, or the single group of a
// small map. Bounded by `HEADER_MAP_*`; a larger map is searched in part and counted.

const TRACEPARENT_KEY: &[u8; 11] = b"Traceparent";
/// Bucket `tophash` values below this mark empty or evacuated slots (the runtime's `minTopHash`).
const MIN_TOP_HASH: u8 = 5;
/// `hmap.flags` bit: the map grows in place, so the old bucket array is as long as the new one.
const SAME_SIZE_GROW: u8 = 8;
/// Swiss-table control byte: the top bit is clear for a full slot.
const CTRL_EMPTY_BIT: u64 = 0x80;
/// A `B` larger than this is refused outright (the array alone exceeds the bound).
const BUCKET_SHIFT_MAX: u8 = 15;
const MAP_WORDS: usize = GO_BUCKET_SIZE / 8;
const _: () = assert!(GO_GROUP_SIZE <= GO_BUCKET_SIZE && GO_BUCKET_SIZE.is_multiple_of(8));

/// One bucket or group of a header map, copied in one read and then read word by word.
#[map]
static MAP_SCRATCH: PerCpuArray<[u64; MAP_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// The remote parent carried by the request's `traceparent` header, if any.
fn incoming_parent(request: &Snapshot<REQUEST_BYTES>, off: &GoOffsets) -> Option<SpanContext> {
    let header = request.word(off.request_header)?;
    // The map's header in one read: its count, then the fields of its layout.
    let map = Snapshot::<MAP_BYTES>::take(SLOT_MAP, header)?;
    // An empty map (a request with no header but `Host`, which is not in it) needs no walk.
    if map.word(GO_MAP_COUNT)? == 0 {
        return None;
    }
    // SAFETY: user-memory reads along Request.Header and the runtime's map structures.
    unsafe {
        let values = if off.swiss_dir_ptr != OFFSET_NONE {
            find_in_swiss_map(&map, off)
        } else if off.hmap_buckets != OFFSET_NONE {
            find_in_bucket_map(&map, off)
        } else {
            None
        }?;
        // The first string of the `[]string` value.
        let [ptr, len] = read_user_at::<[u64; 2]>(values, 0).ok()?;
        if len < TRACEPARENT_VALUE_LEN as u64 {
            return None;
        }
        let value: [u8; TRACEPARENT_VALUE_LEN] = read_user_at(ptr, 0).ok()?;
        parse_traceparent(&value)
    }
}

/// Runs a map walk's visitor under `bpf_loop`. Visiting a one-group map with direct calls
/// instead was measured: no faster (the loop's own cost is a few ns).
///
/// # Safety
/// `visit` must take `state` as its context.
#[inline(always)]
unsafe fn run_walk<T>(visit: extern "C" fn(u64, *mut c_void) -> i64, state: &mut T, steps: u32) {
    let ctx = (state as *mut T).cast::<c_void>();
    // SAFETY: the callback has the signature bpf_loop expects; `state` outlives the call.
    unsafe { bpf_loop(steps, visit as *mut c_void, ctx, 0) };
}

/// When the slot whose key header is at word `key` of `words` is `Traceparent`, the address of
/// its `[]string` value's first element (the value header is at word `elem`).
#[inline(always)]
fn traceparent_slot(words: &[u64; MAP_WORDS], key: usize, elem: usize) -> Option<u64> {
    let (ptr, len) = (*words.get(key)?, *words.get(key + 1)?);
    if len != TRACEPARENT_KEY.len() as u64 || ptr == 0 {
        return None;
    }
    // SAFETY: a user-memory read of the 11 key bytes (length checked above).
    let n: [u8; 11] = unsafe { read_user_at(ptr, 0) }.ok()?;
    // Two overlapping words rather than a byte loop, which LLVM could turn into a `bcmp` call.
    let head = u64::from_le_bytes([n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]]);
    let tail = u64::from_le_bytes([n[3], n[4], n[5], n[6], n[7], n[8], n[9], n[10]]);
    if head != u64::from_le_bytes(*b"Tracepar") || tail != u64::from_le_bytes(*b"ceparent") {
        return None;
    }
    let (values, count) = (*words.get(elem)?, *words.get(elem + 1)?);
    (values != 0 && count > 0).then_some(values)
}

/// Copies `len` bytes at `at` into `MAP_SCRATCH`.
#[inline(always)]
fn copy_container(at: u64, len: usize) -> Option<&'static [u64; MAP_WORDS]> {
    let buf = MAP_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: copies at most the scratch's size (`len <= GO_BUCKET_SIZE`) from user memory.
    let copied = unsafe { bpf_probe_read_user(buf.cast(), len as u32, at as *const c_void) };
    // SAFETY: per-CPU scratch, used only during this run.
    (copied == 0).then(|| unsafe { &*buf })
}

/// State of the `bpf_loop` over a bucket map (Go < 1.24).
#[repr(C)]
struct BucketWalk {
    /// The bucket array being walked, its length and the next index.
    array: u64,
    count: u64,
    next: u64,
    /// The old array while the map grows (walked second), else 0.
    old_array: u64,
    old_count: u64,
    /// The bucket to visit next in the current chain (overflow buckets), 0 for the array's next.
    current: u64,
    /// Result: the value's first element, and 1 once every bucket was searched.
    found: u64,
    done: u64,
}

/// # Safety
/// User-memory reads only.
unsafe fn find_in_bucket_map(hmap: &Snapshot<MAP_BYTES>, off: &GoOffsets) -> Option<u64> {
    let (flags, b) = (hmap.byte(off.hmap_flags)?, hmap.byte(off.hmap_b)?);
    let buckets = hmap.word(off.hmap_buckets).unwrap_or(0);
    let old = hmap.word(off.hmap_oldbuckets).unwrap_or(0);
    if b > BUCKET_SHIFT_MAX || buckets == 0 {
        count(GO_COUNTER_TRACEPARENT_UNSEARCHED);
        return None;
    }
    let old_shift = if flags & SAME_SIZE_GROW != 0 || b == 0 {
        b
    } else {
        b - 1
    };
    let mut walk = BucketWalk {
        array: buckets,
        count: 1 << b,
        next: 0,
        old_array: old,
        old_count: 1 << old_shift,
        current: 0,
        found: 0,
        done: 0,
    };
    // SAFETY: `walk_buckets` takes a `BucketWalk`.
    unsafe { run_walk(walk_buckets, &mut walk, HEADER_MAP_BUCKETS_MAX + 1) };
    finish_walk(walk.found, walk.done)
}

fn finish_walk(found: u64, done: u64) -> Option<u64> {
    if found == 0 && done == 0 {
        count(GO_COUNTER_TRACEPARENT_UNSEARCHED);
    }
    (found != 0).then_some(found)
}

/// `bpf_loop` callback: visits one bucket. Returns 1 to stop.
#[inline(never)]
extern "C" fn walk_buckets(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `BucketWalk` pointer given to it.
    let walk = unsafe { &mut *ctx.cast::<BucketWalk>() };
    if walk.current == 0 {
        if walk.next < walk.count {
            walk.current = walk.array + walk.next * GO_BUCKET_SIZE as u64;
            walk.next += 1;
        } else if walk.old_array != 0 {
            (walk.array, walk.count, walk.next) = (walk.old_array, walk.old_count, 0);
            walk.old_array = 0;
            return 0;
        } else {
            walk.done = 1;
            return 1;
        }
    }
    let Some(words) = copy_container(walk.current, GO_BUCKET_SIZE) else {
        return 1; // searched in part
    };
    let tophash = words[0];
    for i in 0..GO_MAP_SLOTS {
        if (tophash >> (8 * i)) as u8 >= MIN_TOP_HASH
            && let Some(values) = traceparent_slot(
                words,
                (GO_BUCKET_KEYS / 8) + 2 * i,
                (GO_BUCKET_ELEMS / 8) + 3 * i,
            )
        {
            walk.found = values;
            return 1;
        }
    }
    walk.current = words[GO_BUCKET_OVERFLOW / 8];
    0
}

/// State of the `bpf_loop` over a swiss-table map (Go >= 1.24).
#[repr(C)]
struct GroupWalk {
    /// The directory (`*table` array), its length, the next entry and the last table seen
    /// (a table spans consecutive entries when its depth is below the directory's).
    dir: u64,
    dir_len: u64,
    dir_next: u64,
    last_table: u64,
    /// The current table's groups, their count and the next one.
    groups: u64,
    group_count: u64,
    group_next: u64,
    /// `table.groups`, `groupsReference.data` and `.lengthMask` offsets.
    table_groups: u64,
    groups_data: u64,
    groups_mask: u64,
    found: u64,
    done: u64,
}

/// # Safety
/// User-memory reads only.
unsafe fn find_in_swiss_map(map: &Snapshot<MAP_BYTES>, off: &GoOffsets) -> Option<u64> {
    if off.swiss_dir_len == OFFSET_NONE
        || off.swiss_table_groups == OFFSET_NONE
        || off.swiss_groups_data == OFFSET_NONE
        || off.swiss_groups_length_mask == OFFSET_NONE
    {
        return None;
    }
    let dir = map.word(off.swiss_dir_ptr).unwrap_or(0);
    let dir_len = map.word(off.swiss_dir_len)?;
    if dir == 0 {
        return None; // an empty small map
    }
    let small = dir_len == 0;
    let mut walk = GroupWalk {
        dir,
        dir_len,
        dir_next: 0,
        last_table: 0,
        // A small map's `dirPtr` is its one group.
        groups: if small { dir } else { 0 },
        group_count: u64::from(small),
        group_next: 0,
        table_groups: u64::from(off.swiss_table_groups),
        groups_data: u64::from(off.swiss_groups_data),
        groups_mask: u64::from(off.swiss_groups_length_mask),
        found: 0,
        done: 0,
    };
    // SAFETY: `walk_groups` takes a `GroupWalk`.
    unsafe {
        run_walk(
            walk_groups,
            &mut walk,
            HEADER_MAP_TABLES_MAX + HEADER_MAP_GROUPS_MAX,
        )
    };
    finish_walk(walk.found, walk.done)
}

/// `bpf_loop` callback: moves to the next table or visits one group. Returns 1 to stop.
#[inline(never)]
extern "C" fn walk_groups(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `GroupWalk` pointer given to it.
    let walk = unsafe { &mut *ctx.cast::<GroupWalk>() };
    if walk.group_next >= walk.group_count {
        if walk.dir_next >= walk.dir_len {
            walk.done = 1;
            return 1;
        }
        if walk.dir_next >= u64::from(HEADER_MAP_TABLES_MAX) {
            return 1; // searched in part
        }
        // SAFETY: user-memory reads of a directory entry and of the table it points to.
        let (table, data, mask) = unsafe {
            let Ok(table) = read_user_at::<u64>(walk.dir + 8 * walk.dir_next, 0) else {
                return 1;
            };
            let groups = table + walk.table_groups;
            (
                table,
                read_user_at::<u64>(groups + walk.groups_data, 0).unwrap_or(0),
                read_user_at::<u64>(groups + walk.groups_mask, 0).unwrap_or(0),
            )
        };
        walk.dir_next += 1;
        if table != walk.last_table {
            walk.last_table = table;
            (walk.groups, walk.group_count, walk.group_next) = (data, mask + 1, 0);
        }
        return 0;
    }
    let group = walk.groups + walk.group_next * GO_GROUP_SIZE as u64;
    walk.group_next += 1;
    let Some(words) = copy_container(group, GO_GROUP_SIZE) else {
        return 1; // searched in part
    };
    let ctrl = words[0];
    let slot_words = GO_GROUP_SLOT_SIZE / 8;
    for i in 0..GO_MAP_SLOTS {
        if (ctrl >> (8 * i)) & CTRL_EMPTY_BIT == 0
            && let Some(values) = traceparent_slot(
                words,
                GO_GROUP_SLOTS_OFFSET / 8 + slot_words * i,
                (GO_GROUP_SLOTS_OFFSET + GO_GROUP_SLOT_ELEM) / 8 + slot_words * i,
            )
        {
            walk.found = values;
            return 1;
        }
    }
    0
}

// === outgoing trace context ===
//
// `bpf_probe_write_user` is refused under kernel lockdown, so the `traceparent` header cannot be
// written into Go's buffers. It is added on the way out instead: the Go probe records the client
// span under its connection's ports, `sock_ops` files client sockets into `SOCKETS`, and the
// `sk_msg` program attached to that map inserts the header after the request line. HTTP/1 in
// clear text only; TLS and HTTP/2 need other means.

/// Client span contexts waiting for their request to be written, by `connection_key`.
#[map]
static OUTGOING: LruHashMap<u32, SpanContext> = LruHashMap::with_max_entries(GO_OUTGOING_MAX, 0);

/// Established client sockets, by `connection_key`; `sk_msg` runs on their sends.
#[map]
static SOCKETS: SockHash<u32> = SockHash::with_max_entries(65_536, 0);

/// Sockets an instrumented process is connecting, by socket cookie, until they are established.
///
/// A socket runs the `sk_msg` program of the first sockmap it joins and no other (the kernel
/// refuses a second one with `EBUSY`), and `sock_ops` sees every socket of the cgroup, so an
/// instance that filed every client socket took over the sockets of processes another odiglet
/// (a second `odiglet trace`, a test) instruments: its `sk_msg` found nothing of theirs in its
/// own `OUTGOING` and their requests went out without `traceparent`. Each instance therefore
/// files only the sockets its own processes open.
#[map]
static CONNECTING: LruHashMap<u64, u32> = LruHashMap::with_max_entries(GO_OUTGOING_MAX, 0);

/// Bytes of an outgoing message examined for the request line and existing headers.
const INSPECT_LEN: usize = 1024;
/// Longest request line we look for the end of.
const REQUEST_LINE_MAX: usize = 512;
/// Bytes of headers searched for an existing `traceparent`.
const HEADER_SCAN_LEN: usize = 768;

#[map]
static MESSAGE_SCRATCH: PerCpuArray<[u8; INSPECT_LEN]> = PerCpuArray::with_max_entries(1, 0);

#[uprobe]
pub fn odiglet_go_http_conn_entry(ctx: ProbeContext) -> u32 {
    let _ = try_conn_entry(&ctx);
    0
}

/// `(*persistConn).roundTrip(pc, req)` runs on the goroutine of `(*Transport).roundTrip` once
/// the connection is chosen: `pc = RAX`. Records the client span under the connection's ports.
fn try_conn_entry(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_HTTP_PROPAGATION) else {
        return Ok(());
    };
    // SAFETY: a lookup whose value is copied out at once.
    let Some(context) = (unsafe { CLIENT_CALLS.get(key) }).map(|call| call.span.header.context)
    else {
        return Ok(());
    };
    let pc = go_register(regs(ctx), 0);
    // SAFETY: user-memory reads along persistConn.conn -> *TCPConn -> *netFD -> *TCPAddr.
    let Some((local, remote)) = (unsafe { connection_ports(pc, off.persist_conn_conn, off) })
    else {
        return Ok(());
    };
    let _ = OUTGOING.insert(connection_key(local, remote), context, 0);
    Ok(())
}

/// (local, remote) ports of the TCP connection in the `net.Conn` interface at `owner + conn`:
/// `*TCPConn` -> `conn.fd` (`*netFD`) -> `laddr`/`raddr` (`*TCPAddr`) -> `Port`.
///
/// # Safety
/// User-memory reads only: a wrong pointer gives `None` or wrong ports, never a fault.
#[inline(always)]
unsafe fn connection_ports(owner: u64, conn: u32, off: &GoOffsets) -> Option<(u16, u16)> {
    if conn == OFFSET_NONE || off.tcp_addr_port == OFFSET_NONE {
        return None;
    }
    // SAFETY: forwarded contract. An interface is (itab, data): the data word follows.
    unsafe {
        let conn = pointer_field(owner, conn.wrapping_add(8));
        let fd = pointer_field(conn, off.tcp_conn_fd);
        let local = pointer_field(fd, off.net_fd_laddr.wrapping_add(8));
        let remote = pointer_field(fd, off.net_fd_raddr.wrapping_add(8));
        if local == 0 || remote == 0 {
            return None;
        }
        let local = read_user_at::<u64>(local, off.tcp_addr_port).ok()?;
        let remote = read_user_at::<u64>(remote, off.tcp_addr_port).ok()?;
        Some((local as u16, remote as u16))
    }
}

#[sock_ops]
pub fn odiglet_sock_ops(ctx: SockOpsContext) -> u32 {
    // SAFETY: the context's sock_ops pointer is valid for this run.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    match ctx.op() {
        // connect() calls this in the connecting thread, so the process is known here (and
        // no longer once the handshake completes, in softirq).
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
            let propagating = GO_LIBRARY_HTTP_PROPAGATION | GO_LIBRARY_GRPC_PROPAGATION;
            if offsets_for(pid, propagating).is_some() {
                let _ = CONNECTING.insert(cookie, pid, 0);
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            // SAFETY: a presence check whose value is not kept.
            if unsafe { CONNECTING.get(cookie) }.is_none() {
                return 1;
            }
            let _ = CONNECTING.remove(cookie);
            // local_port is in host order; remote_port holds the network-order port in its
            // top half.
            let key = connection_key(
                ctx.local_port() as u16,
                u32::from_be(ctx.remote_port()) as u16,
            );
            // SAFETY: the context's sock_ops pointer is valid for this run.
            let ops = unsafe { &mut *ctx.ops };
            let _ = SOCKETS.update(key, ops, u64::from(BPF_ANY));
        }
        _ => {}
    }
    1
}

#[sk_msg]
pub fn odiglet_sk_msg_inject(ctx: SkMsgContext) -> u32 {
    let _ = try_inject(&ctx);
    SK_PASS
}

fn try_inject(ctx: &SkMsgContext) -> Result<(), i32> {
    // SAFETY: the context's message pointer is valid for this run.
    let md = unsafe { &*ctx.msg };
    let key = connection_key(md.local_port as u16, u32::from_be(md.remote_port) as u16);
    // SAFETY: a lookup whose value is copied out at once.
    if let Some(context) = (unsafe { OUTGOING.get(key) }).copied() {
        let _ = OUTGOING.remove(key);
        match inject(ctx, &context) {
            Ok(true) => count(GO_COUNTER_INJECTED),
            Ok(false) => count(GO_COUNTER_INJECT_SKIPPED),
            Err(_) => count(GO_COUNTER_INJECT_FAILED),
        }
        return Ok(());
    }
    // SAFETY: as above.
    if let Some(context) = (unsafe { grpc::GRPC_OUTGOING.get(key) }).copied() {
        // A message without a HEADERS frame (SETTINGS, WINDOW_UPDATE, PING...) leaves the
        // context waiting for the next one.
        match inject_hpack(ctx, &context) {
            Ok(false) => {}
            Ok(true) => {
                let _ = grpc::GRPC_OUTGOING.remove(key);
                count(GO_COUNTER_INJECTED);
            }
            Err(_) => {
                let _ = grpc::GRPC_OUTGOING.remove(key);
                count(GO_COUNTER_INJECT_FAILED);
            }
        }
    }
    Ok(())
}

/// Copies up to `INSPECT_LEN` bytes of the message's start into `MESSAGE_SCRATCH`; returns how
/// many (at least `min`).
fn copy_message_start(ctx: &SkMsgContext, min: usize) -> Result<usize, i32> {
    let size = ctx.size() as usize;
    let inspect = if size > INSPECT_LEN {
        INSPECT_LEN
    } else {
        size
    };
    if inspect < min {
        return Err(-1);
    }
    // SAFETY: the helper linearizes the first bytes of this message.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, inspect as u32, 0) } != 0 {
        return Err(-1);
    }
    let buf = MESSAGE_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    let available = ctx.data_end().saturating_sub(ctx.data());
    let copy = if available < inspect {
        available
    } else {
        inspect
    };
    if copy < min {
        return Err(-1);
    }
    // Copy rather than parse in place: the verifier checks array indexes far more easily
    // than variable packet offsets.
    // SAFETY: reads `copy <= INSPECT_LEN` bytes of the linear message data into our buffer.
    if unsafe { bpf_probe_read_kernel(buf.cast(), copy as u32, ctx.data() as *const _) } != 0 {
        return Err(-1);
    }
    Ok(copy)
}

// === outgoing gRPC trace context ===
//
// HTTP/2 compresses headers with HPACK, whose dynamic table both ends keep in step, so a header
// cannot be spliced in as text. What can be added without touching that state is a *literal
// header field without indexing, new name* (RFC 7541 §6.2.2): `0x00`, the name's length and
// bytes, the value's length and bytes, neither Huffman-coded. It is appended at the end of the
// stream's HEADERS frame (after every field the encoder wrote, so a dynamic table size update,
// which must come first, stays first) and the frame's 24-bit length grows by its size.
//
// Limits: the HEADERS frame's 9-byte header must lie in the first `INSPECT_LEN` bytes of one
// `sendmsg` and the whole frame in that message; frames with CONTINUATION (no END_HEADERS) or
// padding are left alone; the context goes to the first HEADERS frame written on the connection
// after the call chose it, so concurrent calls multiplexed on one connection may swap parents.
// Clear text only (TLS encrypts before `sk_msg` sees the bytes).

/// HTTP/2 frame types and flags used here.
const H2_FRAME_HEADERS: u8 = 0x1;
const H2_FLAG_END_HEADERS: u8 = 0x4;
const H2_FLAG_PADDED: u8 = 0x8;
const H2_FRAME_HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, which grpc-go does not raise.
const H2_DEFAULT_MAX_FRAME: usize = 16_384;
/// The client connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const H2_PREFACE_LEN: usize = 24;
/// Frames walked per message.
const H2_FRAMES_MAX: u32 = 16;

/// State of the `bpf_loop` over the frames of a message.
#[repr(C)]
struct FrameScan {
    /// Valid bytes in `MESSAGE_SCRATCH`.
    copy: u64,
    /// Where the next frame starts.
    at: u64,
    /// Result: offset of the HEADERS frame (its flags in `flags`, its length in `len`).
    found: u64,
    len: u64,
    flags: u64,
    seen: u64,
}

/// Appends `traceparent` to the first HEADERS frame. `Ok(false)`: the message has none.
fn inject_hpack(ctx: &SkMsgContext, context: &SpanContext) -> Result<bool, i32> {
    let copy = copy_message_start(ctx, H2_FRAME_HEADER_LEN)?;
    let buf = MESSAGE_SCRATCH.get_ptr(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch filled just above.
    let preface = unsafe { (*buf).starts_with(b"PRI * HTTP/2.0") };
    let mut scan = FrameScan {
        copy: copy as u64,
        at: if preface { H2_PREFACE_LEN as u64 } else { 0 },
        found: 0,
        len: 0,
        flags: 0,
        seen: 0,
    };
    // SAFETY: the callback has the signature bpf_loop expects; `scan` outlives the call.
    unsafe {
        bpf_loop(
            H2_FRAMES_MAX,
            find_headers_frame as *mut c_void,
            (&raw mut scan).cast(),
            0,
        )
    };
    if scan.seen == 0 {
        return Ok(false);
    }
    let (frame, len, flags) = (scan.found as u32, scan.len as u32, scan.flags as u8);
    let end = frame + H2_FRAME_HEADER_LEN as u32 + len;
    if flags & H2_FLAG_END_HEADERS == 0
        || flags & H2_FLAG_PADDED != 0
        || end > ctx.size()
        || len as usize + TRACEPARENT_HPACK_LEN > H2_DEFAULT_MAX_FRAME
    {
        return Err(-1);
    }
    ctx.push_data(end, TRACEPARENT_HPACK_LEN as u32, 0)?;
    // SAFETY: makes the pushed bytes linear; afterwards `data` points at `end`.
    if unsafe { bpf_msg_pull_data(ctx.msg, end, end + TRACEPARENT_HPACK_LEN as u32, 0) } != 0 {
        return Err(-1);
    }
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + TRACEPARENT_HPACK_LEN > data_end {
        return Err(-1);
    }
    let field = traceparent_hpack(context);
    for (k, byte) in field.iter().enumerate() {
        // SAFETY: `data + k < data + TRACEPARENT_HPACK_LEN <= data_end`, checked above.
        unsafe { *((data + k) as *mut u8) = *byte };
    }
    // The frame's length, big-endian in its first three bytes.
    // SAFETY: makes the frame header linear; afterwards `data` points at `frame`.
    if unsafe { bpf_msg_pull_data(ctx.msg, frame, frame + 3, 0) } != 0 {
        return Err(-1);
    }
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + 3 > data_end {
        return Err(-1);
    }
    let grown = (len + TRACEPARENT_HPACK_LEN as u32).to_be_bytes();
    for k in 0..3 {
        // SAFETY: `data + k < data + 3 <= data_end`, checked above.
        unsafe { *((data + k) as *mut u8) = grown[k + 1] };
    }
    Ok(true)
}

/// `bpf_loop` callback: steps over frames until a HEADERS one. Returns 1 to stop.
#[inline(never)]
extern "C" fn find_headers_frame(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `FrameScan` pointer given to it.
    let scan = unsafe { &mut *ctx.cast::<FrameScan>() };
    let Some(buf) = MESSAGE_SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch filled by the caller in this same run.
    let buf = unsafe { &*buf };
    let i = scan.at as usize;
    // Bound `i` itself: the verifier tracks the register that indexes.
    if i >= INSPECT_LEN - H2_FRAME_HEADER_LEN || scan.at + H2_FRAME_HEADER_LEN as u64 > scan.copy {
        return 1;
    }
    let len = u64::from(buf[i]) << 16 | u64::from(buf[i + 1]) << 8 | u64::from(buf[i + 2]);
    if buf[i + 3] == H2_FRAME_HEADERS {
        scan.found = scan.at;
        scan.len = len;
        scan.flags = u64::from(buf[i + 4]);
        scan.seen = 1;
        return 1;
    }
    scan.at += H2_FRAME_HEADER_LEN as u64 + len;
    0
}

/// The HPACK literal carrying `traceparent: 00-<trace id>-<span id>-<flags>`.
fn traceparent_hpack(context: &SpanContext) -> [u8; TRACEPARENT_HPACK_LEN] {
    let mut out = [0u8; TRACEPARENT_HPACK_LEN];
    out[0] = 0x00;
    out[1] = 11;
    out[2..13].copy_from_slice(b"traceparent");
    out[13] = TRACEPARENT_VALUE_LEN as u8;
    let header = traceparent_header(context);
    // `traceparent: ` is 13 bytes; the value follows, before the CRLF.
    out[14..].copy_from_slice(&header[13..13 + TRACEPARENT_VALUE_LEN]);
    out
}

/// Inserts the header after the request line. `Ok(false)`: the request already has one.
fn inject(ctx: &SkMsgContext, context: &SpanContext) -> Result<bool, i32> {
    let copy = copy_message_start(ctx, 16)?;
    let buf = MESSAGE_SCRATCH.get_ptr(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch filled just above, used only during this run.
    let buf = unsafe { &*buf };
    // The request line ends with " HTTP/1.x\r\n". Both scans run under `bpf_loop`, which
    // verifies the callback once instead of every iteration of a variable-bound loop.
    let mut scan = Scan {
        copy: copy as u64,
        start: 0,
        found: 0,
    };
    // SAFETY: the callback has the signature bpf_loop expects; `scan` outlives the call.
    unsafe {
        bpf_loop(
            REQUEST_LINE_MAX as u32,
            find_line_end as *mut c_void,
            (&raw mut scan).cast(),
            0,
        )
    };
    let eol = scan.found as usize;
    if !(10..REQUEST_LINE_MAX).contains(&eol) || &buf[eol - 9..eol - 1] != b" HTTP/1." {
        return Err(-1);
    }
    // Leave requests that already carry a traceparent (an SDK in the application) alone.
    let mut scan = Scan {
        copy: copy as u64,
        start: (eol + 1) as u64,
        found: 0,
    };
    // SAFETY: as above.
    unsafe {
        bpf_loop(
            HEADER_SCAN_LEN as u32,
            find_traceparent as *mut c_void,
            (&raw mut scan).cast(),
            0,
        )
    };
    if scan.found != 0 {
        return Ok(false);
    }

    let at = (eol + 2) as u32;
    ctx.push_data(at, TRACEPARENT_HEADER_LEN as u32, 0)?;
    // SAFETY: makes the pushed bytes linear; afterwards `data` points at `at`.
    if unsafe { bpf_msg_pull_data(ctx.msg, at, at + TRACEPARENT_HEADER_LEN as u32, 0) } != 0 {
        return Err(-1);
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + TRACEPARENT_HEADER_LEN > end {
        return Err(-1);
    }
    let header = traceparent_header(context);
    for (k, byte) in header.iter().enumerate() {
        // SAFETY: `data + k < data + TRACEPARENT_HEADER_LEN <= end`, checked above.
        unsafe { *((data + k) as *mut u8) = *byte };
    }
    Ok(true)
}

/// State shared with the `bpf_loop` callbacks (which re-fetch the per-CPU buffer themselves).
#[repr(C)]
struct Scan {
    /// Valid bytes in `MESSAGE_SCRATCH`.
    copy: u64,
    /// Where the scan starts.
    start: u64,
    /// Result: the offset found, 0 for none.
    found: u64,
}

/// `bpf_loop` callback: finds the `\r\n` ending the request line. Returns 1 to stop.
#[inline(never)]
extern "C" fn find_line_end(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Scan` pointer given to it.
    let scan = unsafe { &mut *ctx.cast::<Scan>() };
    let Some(buf) = MESSAGE_SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch filled by the caller in this same run.
    let buf = unsafe { &*buf };
    let i = index as usize;
    if i >= REQUEST_LINE_MAX - 1 || index + 1 >= scan.copy {
        return 1;
    }
    if buf[i] == b'\r' && buf[i + 1] == b'\n' {
        scan.found = index;
        return 1;
    }
    0
}

/// `bpf_loop` callback: sets `found` when a header line is named `traceparent`. Returns 1 to
/// stop at the end of the headers or of the buffer.
#[inline(never)]
extern "C" fn find_traceparent(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `Scan` pointer given to it.
    let scan = unsafe { &mut *ctx.cast::<Scan>() };
    let Some(buf) = MESSAGE_SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch filled by the caller in this same run.
    let buf = unsafe { &*buf };
    let i = (scan.start + index) as usize;
    // Bound `i` itself (not `i + 14`): the verifier tracks the register that indexes.
    if i >= INSPECT_LEN - 14 || i as u64 + 14 >= scan.copy {
        return 1;
    }
    if buf[i] != b'\n' {
        return 0;
    }
    if buf[i + 1] == b'\r' {
        return 1; // end of headers
    }
    if names_traceparent(buf, i + 1) {
        scan.found = 1;
        return 1;
    }
    0
}

/// True when the header line starting at `at` is named `traceparent` (any case).
#[inline(always)]
fn names_traceparent(buf: &[u8; INSPECT_LEN], at: usize) -> bool {
    let (Some(head), Some(tail)) = (buf.get(at..at + 8), buf.get(at + 8..at + 12)) else {
        return false;
    };
    let mut h = [0u8; 8];
    h.copy_from_slice(head);
    let mut t = [0u8; 4];
    t.copy_from_slice(tail);
    // OR-ing 0x20 lowercases ASCII letters and leaves ':' unchanged.
    u64::from_le_bytes(h) | 0x2020_2020_2020_2020 == u64::from_le_bytes(*b"tracepar")
        && u32::from_le_bytes(t) | 0x2020_2020 == u32::from_le_bytes(*b"ent:")
}

fn hex_digit(nibble: u8) -> u8 {
    if nibble < 10 {
        b'0' + nibble
    } else {
        b'a' + nibble - 10
    }
}

/// `traceparent: 00-<trace id>-<span id>-<flags>\r\n`.
fn traceparent_header(context: &SpanContext) -> [u8; TRACEPARENT_HEADER_LEN] {
    let mut out = [0u8; TRACEPARENT_HEADER_LEN];
    out[..16].copy_from_slice(b"traceparent: 00-");
    for (i, b) in context.trace_id.iter().enumerate() {
        out[16 + 2 * i] = hex_digit(b >> 4);
        out[17 + 2 * i] = hex_digit(b & 0xf);
    }
    out[48] = b'-';
    for (i, b) in context.span_id.iter().enumerate() {
        out[49 + 2 * i] = hex_digit(b >> 4);
        out[50 + 2 * i] = hex_digit(b & 0xf);
    }
    out[65] = b'-';
    out[66] = hex_digit(context.trace_flags >> 4);
    out[67] = hex_digit(context.trace_flags & 0xf);
    out[68] = b'\r';
    out[69] = b'\n';
    out
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any reachable panic path, so this is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}
