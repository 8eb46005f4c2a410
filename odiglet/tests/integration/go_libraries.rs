//! Go instrumentation beyond net/http against the real kernel: `database/sql` with a driver the
//! test writes (every Go toolchain, module mode) and with lib/pq against a real PostgreSQL,
//! gRPC client and server (grpc-go 1.33 from Debian, GOPATH mode with Go 1.19): spans, their
//! attributes, parent/child links across libraries and processes' goroutines, status codes,
//! incoming and outgoing trace context, and per-library switches on a running process.

use std::{
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use odiglet::{
    goelf::{self, OffsetSource},
    instrument::{ALL_LIBRARIES, library_bits},
    pipeline::to_otlp_span,
    time::BootClock,
};
use odiglet_common::{
    GoSpanRecord,
    go::{
        DB_SYSTEM_OTHER, DB_SYSTEM_POSTGRESQL, DbSpan, GrpcClientSpan, GrpcServerSpan,
        HttpServerSpan, SPAN_FLAG_DB_EXEC, SPAN_FLAG_ERROR, SPAN_FLAG_HAS_PARENT,
        SPAN_FLAG_PARENT_REMOTE, SpanHeader,
    },
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use crate::support::{
    build,
    go::{Traced, enable_propagation, free_port, get, hex, spans_of, text},
    guards::ChildGuard,
    postgres::Postgres,
    privileges::privileged,
};

/// A `database/sql` program with its own driver (standard library only, so every toolchain
/// builds it offline): `/query?q=` and `/exec?q=` run the statement; statements containing
/// `fail` fail in the driver.
const SQL_SERVICE: &str = include_str!("go_targets/sql_service.go");

/// A gRPC server and client in one process (grpc-go's health service, implemented here), an
/// HTTP front that makes client calls, and lib/pq queries. Arguments: gRPC port, HTTP port,
/// PostgreSQL connection string. `/rpc?service=S[&tp=traceparent]` calls `Check(S)` and
/// answers 200 + the gRPC code; the server's `Check` fails for `fail` (INTERNAL) and `missing`
/// (NOT_FOUND), calls itself for `call`, and queries PostgreSQL for `db`.
const GRPC_SERVICE: &str = include_str!("go_targets/grpc_service.go");

/// The Debian source packages [`GRPC_SERVICE`] builds against.
const GRPC_PACKAGES: &[&str] = &["google.golang.org/grpc", "github.com/lib/pq"];

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

fn wait_listening(child: &mut ChildGuard, port: u16) {
    child.wait_until(Duration::from_secs(30), |_| {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// The HTTP server span whose path is `path` (exactly one).
fn http_server(spans: &[GoSpanRecord], path: &str) -> HttpServerSpan {
    let found: Vec<_> = spans_of::<HttpServerSpan>(spans)
        .into_iter()
        .filter(|s| text(&s.path, s.path_len) == path)
        .collect();
    assert_eq!(found.len(), 1, "HTTP server spans for {path}");
    found[0]
}

/// The path of the HTTP server span `child` is a child of.
fn http_parent(spans: &[GoSpanRecord], child: &SpanHeader) -> Option<String> {
    spans_of::<HttpServerSpan>(spans)
        .into_iter()
        .find(|parent| is_child_of(child, &parent.header))
        .map(|parent| text(&parent.path, parent.path_len).to_owned())
}

fn is_child_of(child: &SpanHeader, parent: &SpanHeader) -> bool {
    child.flags & SPAN_FLAG_HAS_PARENT != 0
        && child.parent.span_id == parent.context.span_id
        && child.context.trace_id == parent.context.trace_id
}

/// An attribute of the OTLP span the pipeline makes of `record`, as text.
fn otlp_attribute(record: &GoSpanRecord, key: &str) -> Option<String> {
    let span = to_otlp_span(record, &BootClock::fixed(0, 0));
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|value| match value {
            Value::StringValue(s) => s,
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// Percent-encodes a query parameter value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One target of [`SQL_SERVICE`]: query, exec and failures, each a child of its request.
async fn check_sql_target(minor: &str, go: &Path) {
    let what = format!("database/sql, go {minor}");
    let binary = build::go_std_program("gosql", "full", go, SQL_SERVICE, &[]);
    let port = free_port();
    let mut service = ChildGuard::spawn(
        "sql service",
        Command::new(&binary)
            .arg(port.to_string())
            .stdout(Stdio::null()),
    );
    wait_listening(&mut service, port);
    let mut traced = Traced::load(1 << 22);
    traced.attach(
        service.pid(),
        &[
            "net/http client",
            "net/http traceparent propagation",
            "google.golang.org/grpc server",
            "google.golang.org/grpc client",
            "google.golang.org/grpc traceparent propagation",
        ],
    );

    let select = "SELECT name FROM users WHERE email = 'a''b@c.d' AND id IN (1, 2, 3)";
    let insert = "INSERT INTO orders (id, total) VALUES (42, 9.99)";
    assert_eq!(get(port, &format!("/query?q={}", encode(select)), &[]), 200);
    assert_eq!(get(port, &format!("/exec?q={}", encode(insert)), &[]), 200);
    assert_eq!(get(port, "/query?q=SELECT%20fail", &[]), 500);
    assert_eq!(get(port, "/exec?q=DELETE%20fail", &[]), 500);
    traced
        .wait_for(&format!("{what}: db spans"), 4, |s| {
            spans_of::<DbSpan>(s).len()
        })
        .await;
    traced
        .wait_for(&format!("{what}: http spans"), 4, |s| {
            spans_of::<HttpServerSpan>(s).len()
        })
        .await;
    let spans = spans_of::<DbSpan>(&traced.spans);
    assert_eq!(spans.len(), 4, "{what}: one span per call");
    let query = spans[0];
    assert_eq!(text(&query.query, query.query_len), select, "{what}");
    assert_eq!(query.db_system, DB_SYSTEM_OTHER, "{what}");
    assert_eq!(
        query.header.flags & (SPAN_FLAG_ERROR | SPAN_FLAG_DB_EXEC),
        0
    );
    let record = GoSpanRecord::Db(query);
    assert_eq!(
        http_parent(&traced.spans, &query.header).as_deref(),
        Some("/query"),
        "{what}: the query is a child of its request"
    );
    assert_test_driver_select(
        &record,
        "SELECT name FROM users WHERE email = ? AND id IN (?)",
        &what,
    );
    let exec = spans[1];
    assert_eq!(exec.header.flags & SPAN_FLAG_DB_EXEC, SPAN_FLAG_DB_EXEC);
    assert_eq!(exec.header.flags & SPAN_FLAG_ERROR, 0, "{what}");
    assert_eq!(
        otlp_attribute(&GoSpanRecord::Db(exec), "db.query.text").as_deref(),
        Some("INSERT INTO orders (id, total) VALUES (?, ?)")
    );
    assert_eq!(
        http_parent(&traced.spans, &exec.header).as_deref(),
        Some("/exec")
    );
    for failed in &spans[2..] {
        assert_eq!(
            failed.header.flags & SPAN_FLAG_ERROR,
            SPAN_FLAG_ERROR,
            "{what}: {}",
            text(&failed.query, failed.query_len)
        );
    }
    let duration = query.header.end_boot_ns - query.header.start_boot_ns;
    assert!(
        duration > 0 && duration < 5_000_000_000,
        "{what}: {duration}"
    );

    // Prepared statements: the text comes from the `Stmt`; one span per use, none for the
    // prepare itself (`next_spans` fails on extra spans).
    let mark = traced.spans.len();
    let prepared = "SELECT total FROM orders WHERE id = ? AND status = 'open'";
    let update = "UPDATE orders SET total = 0 WHERE id = ?";
    assert_eq!(
        get(port, &format!("/prepared?q={}", encode(prepared)), &[]),
        200
    );
    assert_eq!(
        get(
            port,
            &format!("/prepared?op=exec&q={}", encode(update)),
            &[]
        ),
        200
    );
    assert_eq!(get(port, "/prepared?q=SELECT%20fail", &[]), 500);
    let spans = next_spans(&mut traced, &format!("{what}: prepared"), mark, 6).await;
    let statements = spans_of::<DbSpan>(&spans);
    assert_eq!(statements.len(), 3, "{what}: one span per statement use");
    let (select, exec, failed) = (statements[0], statements[1], statements[2]);
    assert_eq!(text(&select.query, select.query_len), prepared, "{what}");
    assert_eq!(
        select.header.flags & (SPAN_FLAG_ERROR | SPAN_FLAG_DB_EXEC),
        0
    );
    assert_eq!(
        http_parent(&spans, &select.header).as_deref(),
        Some("/prepared"),
        "{what}: the statement is a child of its request"
    );
    let record = GoSpanRecord::Db(select);
    assert_test_driver_select(
        &record,
        "SELECT total FROM orders WHERE id = ? AND status = ?",
        &what,
    );
    assert_eq!(
        exec.header.flags & SPAN_FLAG_DB_EXEC,
        SPAN_FLAG_DB_EXEC,
        "{what}"
    );
    assert_eq!(exec.header.flags & SPAN_FLAG_ERROR, 0, "{what}");
    assert_eq!(
        otlp_attribute(&GoSpanRecord::Db(exec), "db.operation.name").as_deref(),
        Some("UPDATE")
    );
    assert_eq!(
        otlp_attribute(&GoSpanRecord::Db(exec), "db.query.text").as_deref(),
        Some("UPDATE orders SET total = ? WHERE id = ?")
    );
    assert_eq!(
        failed.header.flags & SPAN_FLAG_ERROR,
        SPAN_FLAG_ERROR,
        "{what}"
    );

    let pid = service.pid();
    traced.probes.detach(pid);
    assert_eq!(traced.probes.in_flight(pid), 0, "{what}");
    service.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_sql_spans_with_a_test_driver_across_go_versions() {
    if !privileged("database_sql_spans_with_a_test_driver_across_go_versions") {
        return;
    }
    let toolchains = build::go_toolchains("go_libraries");
    assert!(toolchains.len() >= 3 || std::env::var("CI").as_deref() != Ok("true"));
    for (minor, go) in toolchains {
        check_sql_target(minor, &go).await;
    }
}

/// Waits until `more` spans beyond `mark` arrived and returns those.
async fn next_spans(
    traced: &mut Traced,
    what: &str,
    mark: usize,
    more: usize,
) -> Vec<GoSpanRecord> {
    traced
        .wait_for(what, mark + more, <[GoSpanRecord]>::len)
        .await;
    assert_eq!(traced.settle().await, 0, "{what}: more spans than expected");
    traced.spans[mark..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_server_and_postgres_spans_with_context_and_library_switches() {
    let test = "grpc_client_server_and_postgres_spans_with_context_and_library_switches";
    if !privileged(test) {
        return;
    }
    let Some(go) = build::go_toolchains(test)
        .into_iter()
        .find(|(minor, _)| *minor == "1.19")
        .map(|(_, go)| go)
    else {
        return;
    };
    // GOPATH mode: DWARF, no module list. Vendored and stripped: the module list names
    // grpc-go v1.33.3 and the offsets come from the shipped table's entry for it.
    let Some(gopath) = build::go_gopath_program(test, "grpcsql", &go, GRPC_SERVICE, GRPC_PACKAGES)
    else {
        return;
    };
    let Some(stripped) = build::go_vendored_program(
        test,
        "grpcsql-stripped",
        &go,
        GRPC_SERVICE,
        GRPC_PACKAGES,
        &["-ldflags=-s -w"],
    ) else {
        return;
    };
    let Some(mut postgres) = Postgres::start(test) else {
        return;
    };
    check_grpc_target("GOPATH build, DWARF", &gopath, false, &postgres).await;
    check_grpc_target("stripped, table", &stripped, true, &postgres).await;
    postgres.assert_running();
}

/// The gRPC checks on one build of [`GRPC_SERVICE`]: with DWARF and no module list, or
/// `stripped` (no DWARF: the gRPC offsets can only come from the table's grpc-go entry).
async fn check_grpc_target(what: &str, binary: &Path, stripped: bool, postgres: &Postgres) {
    // Sockets join propagation when an instrumented process connects them: the service dials
    // its gRPC connection at the first call, after the attach.
    let mut traced = Traced::load(1 << 22);
    enable_propagation(&mut traced.probes);
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut service = ChildGuard::spawn(
        "grpc service",
        Command::new(binary)
            .args([grpc_port.to_string(), http_port.to_string(), postgres.dsn()])
            .stdout(Stdio::null()),
    );
    wait_listening(&mut service, http_port);
    wait_listening(&mut service, grpc_port);
    let offsets = goelf::go_offsets(binary).expect("offsets");
    let grpc_module = offsets
        .modules
        .iter()
        .find(|m| m.path == goelf::fields::GRPC_MODULE);
    if stripped {
        assert_eq!(grpc_module.map(|m| m.version.as_str()), Some("v1.33.3"));
        assert_eq!(offsets.source, OffsetSource::Table, "{what}");
        assert!(offsets.table_gaps.is_empty(), "{:?}", offsets.table_gaps);
    } else {
        assert!(
            grpc_module.is_none(),
            "{what}: GOPATH builds have no module list"
        );
    }
    traced.attach(
        service.pid(),
        &["net/http client", "net/http traceparent propagation"],
    );
    let pid = service.pid();

    // HTTP server → gRPC client → (traceparent in the HEADERS frame) → gRPC server.
    let mark = traced.spans.len();
    assert_eq!(get(http_port, "/rpc?service=ok", &[]), 200);
    let spans = next_spans(&mut traced, "ok call", mark, 3).await;
    let front = http_server(&spans, "/rpc");
    let client = spans_of::<GrpcClientSpan>(&spans)[0];
    let server = spans_of::<GrpcServerSpan>(&spans)[0];
    assert_eq!(text(&client.method, client.method_len), HEALTH_CHECK);
    assert_eq!(
        text(&client.target, client.target_len),
        format!("127.0.0.1:{grpc_port}")
    );
    assert_eq!(
        (client.status_code, client.header.flags & SPAN_FLAG_ERROR),
        (0, 0)
    );
    assert!(
        is_child_of(&client.header, &front.header),
        "client in the request"
    );
    assert_eq!(text(&server.method, server.method_len), HEALTH_CHECK);
    assert_eq!(server.status_code, 0);
    assert!(
        is_child_of(&server.header, &client.header),
        "the server joined the client's trace through the injected traceparent"
    );
    assert_eq!(
        server.header.flags & SPAN_FLAG_PARENT_REMOTE,
        SPAN_FLAG_PARENT_REMOTE
    );
    let server_record = GoSpanRecord::GrpcServer(server);
    assert_eq!(
        otlp_attribute(&server_record, "client.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        otlp_attribute(&server_record, "rpc.service").as_deref(),
        Some("grpc.health.v1.Health")
    );
    assert_eq!(
        otlp_attribute(&GoSpanRecord::GrpcClient(client), "server.port"),
        Some(grpc_port.to_string())
    );
    assert!(traced.probes.counters().injected >= 1);

    // Status codes, both sides.
    for (service_name, code) in [("fail", 13), ("missing", 5)] {
        let mark = traced.spans.len();
        assert_eq!(
            get(http_port, &format!("/rpc?service={service_name}"), &[]),
            200 + code as u16
        );
        let spans = next_spans(&mut traced, service_name, mark, 3).await;
        let (client, server) = (
            spans_of::<GrpcClientSpan>(&spans)[0],
            spans_of::<GrpcServerSpan>(&spans)[0],
        );
        assert_eq!(client.status_code, code, "{service_name}: client");
        assert_eq!(client.header.flags & SPAN_FLAG_ERROR, SPAN_FLAG_ERROR);
        assert_eq!(server.status_code, code, "{service_name}: server");
        assert!(is_child_of(&server.header, &client.header));
    }

    // Incoming metadata the application set is continued; a call made while serving is a child
    // of the server span, and its callee joins the trace.
    let mark = traced.spans.len();
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    assert_eq!(
        get(http_port, &format!("/rpc?service=call&tp={incoming}"), &[]),
        200
    );
    let spans = next_spans(&mut traced, "nested call", mark, 5).await;
    let servers = spans_of::<GrpcServerSpan>(&spans);
    let clients = spans_of::<GrpcClientSpan>(&spans);
    assert_eq!((servers.len(), clients.len()), (2, 2));
    let front = http_server(&spans, "/rpc");
    let (outer_client, inner_client) = match clients.as_slice() {
        [a, b] if is_child_of(&a.header, &front.header) => (*a, *b),
        [a, b] => (*b, *a),
        _ => unreachable!(),
    };
    assert!(is_child_of(&outer_client.header, &front.header));
    let (outer_server, inner_server) = match servers.as_slice() {
        [a, b] if hex(&a.header.parent.span_id) == PARENT_ID => (*a, *b),
        [a, b] => (*b, *a),
        _ => unreachable!(),
    };
    assert_eq!(hex(&outer_server.header.context.trace_id), TRACE_ID);
    assert_eq!(hex(&outer_server.header.parent.span_id), PARENT_ID);
    assert!(is_child_of(&inner_client.header, &outer_server.header));
    assert!(is_child_of(&inner_server.header, &inner_client.header));

    // lib/pq against PostgreSQL inside a gRPC handler.
    let mark = traced.spans.len();
    assert_eq!(get(http_port, "/rpc?service=db", &[]), 200);
    let spans = next_spans(&mut traced, "db call", mark, 4).await;
    let db = spans_of::<DbSpan>(&spans)[0];
    assert_eq!(db.db_system, DB_SYSTEM_POSTGRESQL);
    assert!(is_child_of(
        &db.header,
        &spans_of::<GrpcServerSpan>(&spans)[0].header
    ));
    let record = GoSpanRecord::Db(db);
    assert_eq!(
        otlp_attribute(&record, "db.query.text").as_deref(),
        Some("SELECT count(*) FROM pg_class WHERE relname = $1 AND relpages > ?")
    );
    assert_eq!(
        otlp_attribute(&record, "db.system.name").as_deref(),
        Some("postgresql")
    );
    assert_eq!(
        otlp_attribute(&record, "db.collection.name").as_deref(),
        Some("pg_class")
    );
    // A prepared statement through lib/pq: its text from the `Stmt`, under its request.
    let mark = traced.spans.len();
    assert_eq!(get(http_port, "/prepared", &[]), 200);
    let spans = next_spans(&mut traced, "prepared statement", mark, 2).await;
    let prepared = spans_of::<DbSpan>(&spans)[0];
    assert_eq!(prepared.db_system, DB_SYSTEM_POSTGRESQL);
    assert_eq!(prepared.header.flags & SPAN_FLAG_ERROR, 0, "{what}");
    assert_eq!(
        http_parent(&spans, &prepared.header).as_deref(),
        Some("/prepared")
    );
    assert_eq!(
        otlp_attribute(&GoSpanRecord::Db(prepared), "db.query.text").as_deref(),
        Some("SELECT count(*) FROM pg_class WHERE relpages > $1 AND relname <> ?")
    );
    let mark = traced.spans.len();
    assert_eq!(get(http_port, "/sql?q=SELECT%201%2F0", &[]), 500);
    let spans = next_spans(&mut traced, "failing query", mark, 2).await;
    assert_eq!(
        spans_of::<DbSpan>(&spans)[0].header.flags & SPAN_FLAG_ERROR,
        SPAN_FLAG_ERROR,
        "division by zero is an error"
    );

    // Per-library switches on the running process: database/sql off, gRPC keeps going.
    traced
        .probes
        .set_libraries(pid, library_bits(&["database/sql".to_owned()]))
        .expect("library switch");
    let mark = traced.spans.len();
    assert_eq!(get(http_port, "/rpc?service=db", &[]), 200);
    let spans = next_spans(&mut traced, "db off", mark, 3).await;
    assert!(spans_of::<DbSpan>(&spans).is_empty(), "database/sql is off");
    assert_eq!(
        (
            spans_of::<GrpcServerSpan>(&spans).len(),
            spans_of::<GrpcClientSpan>(&spans).len()
        ),
        (1, 1)
    );
    // gRPC off, database/sql back on.
    traced
        .probes
        .set_libraries(pid, library_bits(&["google.golang.org/grpc".to_owned()]))
        .expect("library switch");
    let mark = traced.spans.len();
    assert_eq!(get(http_port, "/rpc?service=db", &[]), 200);
    let spans = next_spans(&mut traced, "grpc off", mark, 2).await;
    assert_eq!(spans_of::<DbSpan>(&spans).len(), 1, "database/sql is back");
    assert!(
        spans_of::<GrpcServerSpan>(&spans).is_empty()
            && spans_of::<GrpcClientSpan>(&spans).is_empty()
    );
    assert_eq!(spans_of::<HttpServerSpan>(&spans).len(), 1);
    // Everything back.
    traced
        .probes
        .set_libraries(pid, ALL_LIBRARIES)
        .expect("library switch");
    let mark = traced.spans.len();
    assert_eq!(get(http_port, "/rpc?service=ok", &[]), 200);
    next_spans(&mut traced, "all on", mark, 3).await;

    let counters = traced.probes.counters();
    assert_eq!(
        (counters.ringbuf_full, counters.inject_failed),
        (0, 0),
        "{counters:?}"
    );
    traced.probes.detach(pid);
    assert_eq!(traced.probes.in_flight(pid), 0, "{what}");
    service.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_command_exports_sanitized_database_spans_under_their_request() {
    use crate::support::otlp::{OtlpReceiver, attribute};

    let test = "trace_command_exports_sanitized_database_spans_under_their_request";
    if !privileged(test) {
        return;
    }
    let Some((_, go)) = build::go_toolchains(test).pop() else {
        return;
    };
    let binary = build::go_std_program("gosql", "full", &go, SQL_SERVICE, &[]);
    let port = free_port();
    let mut service = ChildGuard::spawn(
        "sql service",
        Command::new(&binary)
            .arg(port.to_string())
            .stdout(Stdio::null()),
    );
    wait_listening(&mut service, port);
    let receiver = OtlpReceiver::start().await;
    let mut odiglet = crate::support::go::trace_command(
        service.pid(),
        &receiver.endpoint(),
        &["--no-propagation"],
    );
    let query = "SELECT name FROM users WHERE token = 'hunter2'";
    assert_eq!(get(port, &format!("/query?q={}", encode(query)), &[]), 200);
    let spans = receiver.wait_for_spans(2).await;
    let db = spans
        .iter()
        .find(|s| s.span.name == "SELECT users")
        .unwrap_or_else(|| panic!("no database span in {spans:#?}"));
    let request = spans
        .iter()
        .find(|s| s.span.kind == 2)
        .expect("the request's span");
    assert_eq!(db.span.kind, 3, "a client span");
    assert_eq!(db.scope, odiglet::pipeline::SCOPE_DATABASE_SQL);
    assert_eq!(db.span.parent_span_id, request.span.span_id);
    assert_eq!(db.span.trace_id, request.span.trace_id);
    assert_eq!(
        attribute(&db.span.attributes, "db.query.text").as_deref(),
        Some("SELECT name FROM users WHERE token = ?"),
        "the literal never leaves the node"
    );
    assert_eq!(
        attribute(&db.resource, "process.pid"),
        Some(service.pid().to_string())
    );
    drop(service);
    let status = crate::support::go::exit_status(&mut odiglet).await;
    assert!(status.success(), "{status}");
}

/// A `SELECT` through the test's own driver: its sanitized text, operation and the driver's
/// unknown system.
fn assert_test_driver_select(record: &GoSpanRecord, text: &str, what: &str) {
    let attribute = |key| otlp_attribute(record, key);
    assert_eq!(attribute("db.query.text").as_deref(), Some(text), "{what}");
    assert_eq!(
        attribute("db.operation.name").as_deref(),
        Some("SELECT"),
        "{what}"
    );
    assert_eq!(
        attribute("db.system.name").as_deref(),
        Some("other_sql"),
        "{what}"
    );
}
