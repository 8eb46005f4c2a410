//! `database/sql`: uprobes at the entry and every RET of `(*DB).queryDC` and `(*DB).execDC`,
//! which every `Query*`/`Exec*` of `DB`, `Conn` and `Tx` goes through with the statement text
//! in registers, and of `(*Stmt).QueryContext` and `(*Stmt).ExecContext`, which every use of a
//! prepared statement (of a `DB`, `Conn` or `Tx`) goes through, the text read from the
//! `Stmt`'s `query` field. One client span per call, a child of the span active on the
//! goroutine. The two paths never nest, so one in-flight entry per goroutine holds.

use aya_ebpf::{
    macros::{map, uprobe},
    maps::{LruHashMap, PerCpuArray},
    programs::ProbeContext,
};
use odiglet_common::go::{
    DB_QUERY_OFFSET, DbSpan, GO_COUNTER_DOUBLE_ENTRY, GO_COUNTER_READ_FAILED, GO_INFLIGHT_MAX,
    GO_LIBRARY_SQL, GO_SPAN_DB, GoroutineKey, SPAN_FLAG_DB_EXEC, SPAN_FLAG_ERROR,
    SPAN_FLAG_TRUNCATED,
};
use odiglet_ebpf::{go_register, read_go_bytes, read_user_at};

use crate::{
    count, count_missing_entry, current_key, init_header, join_active_span, now, offsets_for, regs,
    submit_record,
};

/// `database/sql` calls in flight.
#[map]
static DB_CALLS: LruHashMap<GoroutineKey, DbSpan> =
    LruHashMap::with_max_entries(GO_INFLIGHT_MAX, 0);

#[map]
static DB_SCRATCH: PerCpuArray<DbSpan> = PerCpuArray::with_max_entries(1, 0);

// queryDC(db, ctx, txctx context.Context, dc *driverConn, releaseConn func(error), query string,
// args []any): db = RAX, ctx = RBX/RCX, txctx = RDI/RSI, dc = R8, releaseConn = R9,
// query = R10/R11.
#[uprobe]
pub fn odiglet_go_sql_query_entry(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    let _ = db_entry(&ctx, (go_register(r, 7), go_register(r, 8)), 0);
    0
}

// execDC(db, ctx context.Context, dc *driverConn, release func(error), query string, args []any):
// db = RAX, ctx = RBX/RCX, dc = RDI, release = RSI, query = R8/R9.
#[uprobe]
pub fn odiglet_go_sql_exec_entry(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    let _ = db_entry(
        &ctx,
        (go_register(r, 5), go_register(r, 6)),
        SPAN_FLAG_DB_EXEC,
    );
    0
}

// Stmt.QueryContext(s *Stmt, ctx context.Context, args ...any): s = RAX.
#[uprobe]
pub fn odiglet_go_sql_stmt_query_entry(ctx: ProbeContext) -> u32 {
    let _ = stmt_entry(&ctx, 0);
    0
}

// Stmt.ExecContext(s *Stmt, ctx context.Context, args ...any): s = RAX.
#[uprobe]
pub fn odiglet_go_sql_stmt_exec_entry(ctx: ProbeContext) -> u32 {
    let _ = stmt_entry(&ctx, SPAN_FLAG_DB_EXEC);
    0
}

/// A prepared statement's call: its text is the `Stmt.query` string.
fn stmt_entry(ctx: &ProbeContext, flags: u32) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_SQL) else {
        return Ok(());
    };
    let stmt = go_register(regs(ctx), 0);
    // SAFETY: user-memory reads of the string header in the `Stmt` the call received.
    let query = unsafe {
        (
            read_user_at::<u64>(stmt, off.sql_stmt_query).unwrap_or(0),
            read_user_at::<u64>(stmt, off.sql_stmt_query + 8).unwrap_or(0),
        )
    };
    db_entry(ctx, query, flags)
}

/// `query` is the statement string (pointer, length), read from registers by the caller:
/// the verifier refuses a register picked by a variable index.
fn db_entry(ctx: &ProbeContext, query: (u64, u64), flags: u32) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(off) = offsets_for(key.pid, GO_LIBRARY_SQL) else {
        return Ok(());
    };
    // SAFETY: a presence check whose value is not kept.
    if unsafe { DB_CALLS.get(key) }.is_some() {
        count(GO_COUNTER_DOUBLE_ENTRY);
        return Ok(());
    }
    let span = DB_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch, used only during this run.
    let span = unsafe { &mut *span };
    init_header(&mut span.header, GO_SPAN_DB, &key);
    join_active_span(&mut span.header, &key);
    span.header.flags |= flags;
    span.db_system = off.db_system;
    span.reserved = 0;
    let (query, len) = query;
    // SAFETY: user-memory read of the statement string the call received.
    match unsafe { read_go_bytes(query, len, &mut span.query) } {
        Ok((n, truncated)) => {
            span.query_len = n;
            if truncated {
                span.header.flags |= SPAN_FLAG_TRUNCATED;
            }
        }
        Err(_) => {
            span.query_len = 0;
            count(GO_COUNTER_READ_FAILED);
        }
    }
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the span (over 500 bytes) would be copied onto the 512-byte BPF stack"
    )]
    DB_CALLS.insert(key, &*span, 0)?;
    Ok(())
}

// queryDC returns (*Rows = RAX, error = RBX itab / RCX data).
#[uprobe]
pub fn odiglet_go_sql_query_return(ctx: ProbeContext) -> u32 {
    let _ = db_return(&ctx, go_register(regs(&ctx), 1));
    0
}

// execDC returns (Result = RAX/RBX, error = RCX itab / RDI data).
#[uprobe]
pub fn odiglet_go_sql_exec_return(ctx: ProbeContext) -> u32 {
    let _ = db_return(&ctx, go_register(regs(&ctx), 2));
    0
}

/// `error_type` is the type word of the returned `error` (nil: success).
fn db_return(ctx: &ProbeContext, error_type: u64) -> Result<(), i32> {
    let key = current_key(ctx);
    let Some(span) = DB_CALLS.get_ptr_mut(key) else {
        count_missing_entry(key.pid, GO_LIBRARY_SQL);
        return Ok(());
    };
    // SAFETY: the map value stays valid until we remove it below, after its last use.
    let span = unsafe { &mut *span };
    if offsets_for(key.pid, GO_LIBRARY_SQL).is_some() {
        span.header.end_boot_ns = now();
        if error_type != 0 {
            span.header.flags |= SPAN_FLAG_ERROR;
        }
        // The record ends after the query (`submit_record` bounds it by the record's size):
        // most statements are far shorter than the buffer.
        submit_record(span, DB_QUERY_OFFSET + usize::from(span.query_len));
    }
    let _ = DB_CALLS.remove(key);
    Ok(())
}
