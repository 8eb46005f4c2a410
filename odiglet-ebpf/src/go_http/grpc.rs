//! gRPC (`google.golang.org/grpc`): server spans from `(*Server).handleStream` (entry + RETs)
//! with the status from `(*http2Server).WriteStatus`, the incoming `traceparent` metadata
//! from `(*http2Server).operateHeaders`, and unary client spans from `(*ClientConn).Invoke`
//! (entry + RETs). `(*http2Client).NewStream` files the client span under its connection's
//! ports for the `sk_msg` program, which adds `traceparent` to the stream's HEADERS frame.
//!
//! Layouts are those of grpc-go before 1.69 (where `transport.Stream` split into client and
//! server streams); user space refuses versions whose fields its DWARF lacks.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_loop,
    macros::{map, uprobe},
    maps::{LruHashMap, PerCpuArray},
    programs::ProbeContext,
};
use odiglet_common::go::{
    GO_COUNTER_DOUBLE_ENTRY, GO_COUNTER_READ_FAILED, GO_INFLIGHT_MAX, GO_LIBRARY_GRPC_CLIENT,
    GO_LIBRARY_GRPC_PROPAGATION, GO_LIBRARY_GRPC_SERVER, GO_OUTGOING_MAX, GO_SPAN_GRPC_CLIENT,
    GO_SPAN_GRPC_SERVER, GRPC_CLIENT_TARGET_OFFSET, GRPC_METADATA_SCAN_MAX,
    GRPC_SERVER_METHOD_OFFSET, GRPC_STATUS_MAX, GRPC_STATUS_UNKNOWN, GoOffsets, GoroutineKey,
    GrpcClientSpan, GrpcServerSpan, HPACK_HEADER_FIELD_SIZE, IP_LEN, OFFSET_NONE, SPAN_FLAG_ERROR,
    SPAN_FLAG_HAS_PARENT, SPAN_FLAG_PARENT_REMOTE, SPAN_FLAG_TRUNCATED, SpanContext,
    connection_key,
};
use odiglet_ebpf::{go_register, read_go_bytes, read_user_at};

use crate::{
    ACTIVE_SPANS, TRACEPARENT_VALUE_LEN, connection_ports, copy_string_field, count,
    count_missing_entry, current_key, init_header, join_active_span, new_context, now, offsets_for,
    parse_traceparent, pointer_field, regs, submit_record,
};

/// gRPC server calls in flight, by goroutine.
#[map]
static GRPC_SERVER_CALLS: LruHashMap<GoroutineKey, GrpcServerSpan> =
    LruHashMap::with_max_entries(GO_INFLIGHT_MAX, 0);

/// gRPC client calls in flight, by goroutine.
#[map]
pub(crate) static GRPC_CLIENT_CALLS: LruHashMap<GoroutineKey, GrpcClientSpan> =
    LruHashMap::with_max_entries(GO_INFLIGHT_MAX, 0);

/// Incoming `traceparent` metadata, read on the transport's reader goroutine and waiting for
/// the stream's handler goroutine: keyed by `{pid, stream id, *http2Server}`.
#[map]
static GRPC_INCOMING: LruHashMap<GoroutineKey, SpanContext> =
    LruHashMap::with_max_entries(GO_INFLIGHT_MAX, 0);

/// Client span contexts waiting for their stream's HEADERS frame, by `connection_key`.
#[map]
pub(crate) static GRPC_OUTGOING: LruHashMap<u32, SpanContext> =
    LruHashMap::with_max_entries(GO_OUTGOING_MAX, 0);

#[map]
static GRPC_SERVER_SCRATCH: PerCpuArray<GrpcServerSpan> = PerCpuArray::with_max_entries(1, 0);
#[map]
static GRPC_CLIENT_SCRATCH: PerCpuArray<GrpcClientSpan> = PerCpuArray::with_max_entries(1, 0);

const TRACEPARENT: &[u8; 11] = b"traceparent";

/// The key an incoming stream's metadata is filed under.
fn stream_key(pid: u32, transport: u64, stream_id: u32) -> GoroutineKey {
    GoroutineKey {
        pid,
        reserved: stream_id,
        goroutine: transport,
    }
}

// === incoming metadata ===

/// State of the `bpf_loop` over `MetaHeadersFrame.Fields`.
#[repr(C)]
struct FieldScan {
    fields: u64,
    len: u64,
    found: Option<SpanContext>,
}

// operateHeaders(t *http2Server, frame *http2.MetaHeadersFrame, ...): t = RAX, frame = RBX.
#[uprobe]
pub fn odiglet_go_grpc_headers_entry(ctx: ProbeContext) -> u32 {
    let _ = try_headers(&ctx);
    0
}

fn try_headers(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_GRPC_SERVER) else {
        return Ok(());
    };
    if off.http2_meta_fields == OFFSET_NONE || off.http2_frame_stream_id == OFFSET_NONE {
        return Ok(());
    }
    let r = regs(ctx);
    let (transport, frame) = (go_register(r, 0), go_register(r, 1));
    if frame == 0 {
        return Ok(());
    }
    // SAFETY: user-memory reads of the frame the call received.
    let (fields, len, stream_id) = unsafe {
        let headers = pointer_field(frame, off.http2_meta_headers_frame);
        let header = headers + u64::from(off.http2_headers_frame_header);
        let stream_id: u32 = read_user_at(header, off.http2_frame_stream_id)?;
        let fields: u64 = read_user_at(frame, off.http2_meta_fields)?;
        let len: u64 = read_user_at(frame, off.http2_meta_fields + 8)?;
        (fields, len, stream_id)
    };
    if fields == 0 || stream_id == 0 {
        return Ok(());
    }
    let mut scan = FieldScan {
        fields,
        len,
        found: None,
    };
    // SAFETY: the callback has the signature bpf_loop expects; `scan` outlives the call.
    unsafe {
        bpf_loop(
            GRPC_METADATA_SCAN_MAX,
            find_traceparent_field as *mut c_void,
            (&raw mut scan).cast(),
            0,
        )
    };
    if let Some(parent) = scan.found {
        let _ = GRPC_INCOMING.insert(stream_key(key.pid, transport, stream_id), parent, 0);
    }
    Ok(())
}

/// `bpf_loop` callback: looks at field `index`; returns 1 to stop.
#[inline(never)]
extern "C" fn find_traceparent_field(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `FieldScan` pointer given to it.
    let scan = unsafe { &mut *ctx.cast::<FieldScan>() };
    if index >= scan.len {
        return 1;
    }
    let field = scan.fields + index * HPACK_HEADER_FIELD_SIZE;
    // SAFETY: user-memory reads of one `hpack.HeaderField {Name, Value string}`.
    unsafe {
        let Ok(name_len) = read_user_at::<u64>(field, 8) else {
            return 1;
        };
        if name_len != TRACEPARENT.len() as u64 {
            return 0;
        }
        let Ok(name_ptr) = read_user_at::<u64>(field, 0) else {
            return 1;
        };
        // grpc-go lower-cases metadata keys when it decodes them.
        let Ok(name) = read_user_at::<[u8; 11]>(name_ptr, 0) else {
            return 1;
        };
        if &name != TRACEPARENT {
            return 0;
        }
        let (Ok(value_ptr), Ok(value_len)) = (
            read_user_at::<u64>(field, 16),
            read_user_at::<u64>(field, 24),
        ) else {
            return 1;
        };
        if value_len != TRACEPARENT_VALUE_LEN as u64 {
            return 1;
        }
        let Ok(value) = read_user_at::<[u8; TRACEPARENT_VALUE_LEN]>(value_ptr, 0) else {
            return 1;
        };
        // Only a parsed context is stored: storing `None` lets LLVM write the payload from an
        // uninitialized register, which the verifier refuses.
        if let Some(context) = parse_traceparent(&value) {
            scan.found = Some(context);
        }
    }
    1
}

// === server ===

// handleStream(s *Server, t transport.ServerTransport, stream *transport.Stream, ...):
// s = RAX, t = RBX itab / RCX data, stream = RDI.
#[uprobe]
pub fn odiglet_go_grpc_server_entry(ctx: ProbeContext) -> u32 {
    let _ = try_server_entry(&ctx);
    0
}

fn try_server_entry(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_GRPC_SERVER) else {
        return Ok(());
    };
    // SAFETY: a presence check whose value is not kept.
    if unsafe { GRPC_SERVER_CALLS.get(key) }.is_some() {
        count(GO_COUNTER_DOUBLE_ENTRY);
        return Ok(());
    }
    let span = GRPC_SERVER_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch, used only during this run.
    let span = unsafe { &mut *span };
    let r = regs(ctx);
    let (transport, stream) = (go_register(r, 2), go_register(r, 3));
    init_header(&mut span.header, GO_SPAN_GRPC_SERVER, &key);
    // SAFETY: user-memory read of the stream the call received.
    let stream_id = unsafe { read_user_at::<u32>(stream, off.grpc_stream_id) }.unwrap_or(0);
    let incoming = stream_key(key.pid, transport, stream_id);
    // SAFETY: a lookup whose value is copied out at once.
    let parent = unsafe { GRPC_INCOMING.get(incoming) }.copied();
    if let Some(parent) = parent {
        let _ = GRPC_INCOMING.remove(incoming);
        span.header.parent = parent;
        span.header.flags |= SPAN_FLAG_HAS_PARENT | SPAN_FLAG_PARENT_REMOTE;
    }
    span.header.context = new_context(parent.map(|p| p.trace_id));
    span.status_code = 0;
    span.reserved = 0;
    let mut flags = span.header.flags;
    // SAFETY: user-memory reads of the stream and the transport the call received.
    unsafe {
        copy_string_field(
            stream,
            off.grpc_stream_method,
            &mut span.method,
            &mut span.method_len,
            &mut flags,
        );
        read_peer(transport, off, span);
    }
    span.header.flags = flags;
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the span would be copied onto the 512-byte BPF stack"
    )]
    GRPC_SERVER_CALLS.insert(key, &*span, 0)?;
    let _ = ACTIVE_SPANS.insert(key, span.header.context, 0);
    Ok(())
}

/// `http2Server.remoteAddr` → `*net.TCPAddr` → IP and port.
///
/// # Safety
/// User-memory reads only; a transport that is not an `*http2Server` gives no peer or a wrong
/// one, never a fault.
#[inline(always)]
unsafe fn read_peer(transport: u64, off: &GoOffsets, span: &mut GrpcServerSpan) {
    span.peer_ip_len = 0;
    span.peer_port = 0;
    if off.tcp_addr_ip == OFFSET_NONE || off.tcp_addr_port == OFFSET_NONE {
        return;
    }
    // SAFETY: forwarded contract; an interface's data word follows its type word.
    unsafe {
        let addr = pointer_field(transport, off.grpc_server_remote_addr.wrapping_add(8));
        if addr == 0 {
            return;
        }
        let (Ok(ip), Ok(len), Ok(port)) = (
            read_user_at::<u64>(addr, off.tcp_addr_ip),
            read_user_at::<u64>(addr, off.tcp_addr_ip + 8),
            read_user_at::<u64>(addr, off.tcp_addr_port),
        ) else {
            count(GO_COUNTER_READ_FAILED);
            return;
        };
        if (len == 4 || len == IP_LEN as u64)
            && let Ok((n, _)) = read_go_bytes(ip, len, &mut span.peer_ip)
        {
            span.peer_ip_len = n;
            span.peer_port = port as u32;
        }
    }
}

// WriteStatus(t *http2Server, s *Stream, st *status.Status): t = RAX, s = RBX, st = RCX. It
// runs on the handler's goroutine, inside handleStream.
#[uprobe]
pub fn odiglet_go_grpc_status_entry(ctx: ProbeContext) -> u32 {
    let _ = try_status(&ctx);
    0
}

fn try_status(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_GRPC_SERVER) else {
        return Ok(());
    };
    let Some(span) = GRPC_SERVER_CALLS.get_ptr_mut(key) else {
        return Ok(());
    };
    let status = go_register(regs(ctx), 2);
    // SAFETY: user-memory reads behind the status the call received; the map value is ours
    // for this run.
    unsafe {
        let proto = pointer_field(status, off.grpc_status_proto);
        (*span).status_code = status_code(proto, off);
    }
    Ok(())
}

/// `spb.Status.Code` behind `proto` (nil: OK), bounded to the codes gRPC defines.
///
/// # Safety
/// User-memory reads only.
#[inline(always)]
unsafe fn status_code(proto: u64, off: &GoOffsets) -> u32 {
    if proto == 0 || off.rpc_status_code == OFFSET_NONE {
        return 0;
    }
    // SAFETY: forwarded contract.
    match unsafe { read_user_at::<u32>(proto, off.rpc_status_code) } {
        Ok(code) if code <= GRPC_STATUS_MAX => code,
        _ => GRPC_STATUS_UNKNOWN,
    }
}

#[uprobe]
pub fn odiglet_go_grpc_server_return(ctx: ProbeContext) -> u32 {
    let _ = try_server_return(&ctx);
    0
}

fn try_server_return(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(span) = GRPC_SERVER_CALLS.get_ptr_mut(key) else {
        count_missing_entry(key.pid, GO_LIBRARY_GRPC_SERVER);
        return Ok(());
    };
    // SAFETY: the map value stays valid until we remove it below, after its last use.
    let span = unsafe { &mut *span };
    if offsets_for(key.pid, GO_LIBRARY_GRPC_SERVER).is_some() {
        span.header.end_boot_ns = now();
        if span.status_code != 0 {
            span.header.flags |= SPAN_FLAG_ERROR;
        }
        // The record ends after the method, its last field.
        submit_record(
            span,
            GRPC_SERVER_METHOD_OFFSET + usize::from(span.method_len),
        );
    }
    let _ = GRPC_SERVER_CALLS.remove(key);
    let _ = ACTIVE_SPANS.remove(key);
    Ok(())
}

// === client ===

// Invoke(cc *ClientConn, ctx context.Context, method string, args, reply any, opts ...):
// cc = RAX, ctx = RBX/RCX, method = RDI/RSI.
#[uprobe]
pub fn odiglet_go_grpc_client_entry(ctx: ProbeContext) -> u32 {
    let _ = try_client_entry(&ctx);
    0
}

fn try_client_entry(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_GRPC_CLIENT) else {
        return Ok(());
    };
    // SAFETY: a presence check whose value is not kept.
    if unsafe { GRPC_CLIENT_CALLS.get(key) }.is_some() {
        count(GO_COUNTER_DOUBLE_ENTRY);
        return Ok(());
    }
    let span = GRPC_CLIENT_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch, used only during this run.
    let span = unsafe { &mut *span };
    init_header(&mut span.header, GO_SPAN_GRPC_CLIENT, &key);
    join_active_span(&mut span.header, &key);
    span.status_code = 0;
    let r = regs(ctx);
    let (conn, method, len) = (go_register(r, 0), go_register(r, 3), go_register(r, 4));
    let mut flags = span.header.flags;
    // SAFETY: user-memory reads of the method string and the connection the call received.
    unsafe {
        match read_go_bytes(method, len, &mut span.method) {
            Ok((n, truncated)) => {
                span.method_len = n;
                if truncated {
                    flags |= SPAN_FLAG_TRUNCATED;
                }
            }
            Err(_) => {
                span.method_len = 0;
                count(GO_COUNTER_READ_FAILED);
            }
        }
        copy_string_field(
            conn,
            off.grpc_client_conn_target,
            &mut span.target,
            &mut span.target_len,
            &mut flags,
        );
    }
    span.header.flags = flags;
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the span would be copied onto the 512-byte BPF stack"
    )]
    GRPC_CLIENT_CALLS.insert(key, &*span, 0)?;
    Ok(())
}

// Invoke returns error = RAX itab / RBX data. Every failure it returns is a
// `*status.Error` (`toRPCErr`); the code read is bounded in case an interceptor returned
// something else.
#[uprobe]
pub fn odiglet_go_grpc_client_return(ctx: ProbeContext) -> u32 {
    let _ = try_client_return(&ctx);
    0
}

fn try_client_return(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(span) = GRPC_CLIENT_CALLS.get_ptr_mut(key) else {
        count_missing_entry(key.pid, GO_LIBRARY_GRPC_CLIENT);
        return Ok(());
    };
    // SAFETY: the map value stays valid until we remove it below, after its last use.
    let span = unsafe { &mut *span };
    if let Some(off) = offsets_for(key.pid, GO_LIBRARY_GRPC_CLIENT) {
        span.header.end_boot_ns = now();
        let r = regs(ctx);
        let (error_type, error) = (go_register(r, 0), go_register(r, 1));
        if error_type != 0 {
            span.header.flags |= SPAN_FLAG_ERROR;
            // SAFETY: user-memory reads behind the returned error.
            span.status_code = match unsafe { pointer_field(error, off.grpc_error_proto) } {
                0 => GRPC_STATUS_UNKNOWN,
                // SAFETY: as above.
                proto => match unsafe { status_code(proto, off) } {
                    0 => GRPC_STATUS_UNKNOWN,
                    code => code,
                },
            };
        }
        // The record ends after the target, its last field.
        submit_record(
            span,
            GRPC_CLIENT_TARGET_OFFSET + usize::from(span.target_len),
        );
    }
    let _ = GRPC_CLIENT_CALLS.remove(key);
    Ok(())
}

// (*http2Client).NewStream(t *http2Client, ctx context.Context, callHdr *CallHdr): t = RAX.
// It runs on the calling goroutine, inside Invoke, once the transport is chosen.
#[uprobe]
pub fn odiglet_go_grpc_stream_entry(ctx: ProbeContext) -> u32 {
    let _ = try_stream_entry(&ctx);
    0
}

fn try_stream_entry(ctx: &ProbeContext) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_GRPC_PROPAGATION) else {
        return Ok(());
    };
    // SAFETY: a lookup whose value is copied out at once.
    let Some(context) = (unsafe { GRPC_CLIENT_CALLS.get(key) }).map(|call| call.header.context)
    else {
        return Ok(());
    };
    let transport = go_register(regs(ctx), 0);
    // SAFETY: user-memory reads along http2Client.conn -> *TCPConn -> *netFD -> *TCPAddr.
    let Some((local, remote)) =
        (unsafe { connection_ports(transport, off.grpc_client_transport_conn, off) })
    else {
        return Ok(());
    };
    let _ = GRPC_OUTGOING.insert(connection_key(local, remote), context, 0);
    Ok(())
}
