use odiglet_common::go::{
    DB_QUERY_LEN, DB_SYSTEM_OTHER, DB_SYSTEM_POSTGRESQL, GO_SPAN_DB, GO_SPAN_GRPC_CLIENT,
    GO_SPAN_GRPC_SERVER, GO_SPAN_HTTP_CLIENT, GO_SPAN_HTTP_SERVER, GRPC_METHOD_LEN,
    GRPC_TARGET_LEN, HTTP_ADDR_LEN, HTTP_HOST_LEN, HTTP_METHOD_LEN, HTTP_PATH_LEN, HTTP_PROTO_LEN,
    HTTP_ROUTE_LEN, HTTP_SCHEME_LEN, IP_LEN, SPAN_FLAG_TRUNCATED, SpanContext,
};

use super::*;

pub(crate) fn fill<const N: usize>(value: &[u8]) -> ([u8; N], u16) {
    let mut buffer = [0u8; N];
    let len = value.len().min(N);
    buffer[..len].copy_from_slice(&value[..len]);
    (buffer, len as u16)
}

pub(crate) fn header(kind: u32, flags: u32) -> SpanHeader {
    SpanHeader {
        kind,
        pid: 4242,
        flags,
        reserved: 0,
        start_boot_ns: 2_000,
        end_boot_ns: 5_000,
        goroutine: 0xc000_0001,
        context: SpanContext {
            trace_id: [0x11; 16],
            span_id: [0x22; 8],
            trace_flags: 1,
            reserved: [0; 7],
        },
        parent: SpanContext {
            trace_id: [0x11; 16],
            span_id: [0x33; 8],
            trace_flags: 1,
            reserved: [0; 7],
        },
    }
}

pub(crate) fn server(
    method: &str,
    path: &str,
    route: &str,
    host: &str,
    remote: &str,
    status: u32,
) -> HttpServerSpan {
    let (method, method_len) = fill::<HTTP_METHOD_LEN>(method.as_bytes());
    let (path, path_len) = fill::<HTTP_PATH_LEN>(path.as_bytes());
    let (route, route_len) = fill::<HTTP_ROUTE_LEN>(route.as_bytes());
    let (host, host_len) = fill::<HTTP_HOST_LEN>(host.as_bytes());
    let (remote_addr, remote_addr_len) = fill::<HTTP_ADDR_LEN>(remote.as_bytes());
    let (proto, proto_len) = fill::<HTTP_PROTO_LEN>(b"HTTP/1.1");
    HttpServerSpan {
        header: header(GO_SPAN_HTTP_SERVER, 0),
        status_code: status,
        method_len,
        path_len,
        route_len,
        host_len,
        remote_addr_len,
        proto_len,
        method,
        path,
        route,
        host,
        remote_addr,
        proto,
    }
}

pub(crate) fn client(
    method: &str,
    scheme: &str,
    host: &str,
    path: &str,
    status: u32,
) -> HttpClientSpan {
    let (method, method_len) = fill::<HTTP_METHOD_LEN>(method.as_bytes());
    let (scheme, scheme_len) = fill::<HTTP_SCHEME_LEN>(scheme.as_bytes());
    let (host, host_len) = fill::<HTTP_HOST_LEN>(host.as_bytes());
    let (path, path_len) = fill::<HTTP_PATH_LEN>(path.as_bytes());
    let (proto, proto_len) = fill::<HTTP_PROTO_LEN>(b"HTTP/1.1");
    HttpClientSpan {
        header: header(GO_SPAN_HTTP_CLIENT, 0),
        status_code: status,
        method_len,
        scheme_len,
        host_len,
        path_len,
        proto_len,
        reserved: 0,
        method,
        scheme,
        host,
        path,
        proto,
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(Value::StringValue(s)) => Some(s),
        None => None,
        other => panic!("{key} is not a string: {other:?}"),
    }
}

fn attr_int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::IntValue(i)) => Some(*i),
        None => None,
        other => panic!("{key} is not an int: {other:?}"),
    }
}

fn clock() -> BootClock {
    BootClock::fixed(1_700_000_000_000_000_000, 1_000)
}

fn convert_server(record: HttpServerSpan) -> Span {
    to_otlp_span(&GoSpanRecord::HttpServer(record), &clock())
}

fn convert_client(record: HttpClientSpan) -> Span {
    to_otlp_span(&GoSpanRecord::HttpClient(record), &clock())
}

#[test]
fn server_span_has_semantic_convention_attributes() {
    let span = convert_server(server(
        "GET",
        "/users/7",
        "/users/{id}",
        "api.example:8080",
        "10.0.0.9:51234",
        201,
    ));
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(attr_str(&span, "http.request.method"), Some("GET"));
    assert_eq!(attr_str(&span, "url.path"), Some("/users/7"));
    assert_eq!(attr_str(&span, "http.route"), Some("/users/{id}"));
    assert_eq!(attr_int(&span, "http.response.status_code"), Some(201));
    assert_eq!(attr_str(&span, "server.address"), Some("api.example"));
    assert_eq!(attr_int(&span, "server.port"), Some(8080));
    assert_eq!(attr_str(&span, "client.address"), Some("10.0.0.9"));
    assert_eq!(attr_int(&span, "client.port"), Some(51234));
    assert_eq!(attr_str(&span, "network.protocol.version"), Some("1.1"));
    assert_eq!(span.status, None);
    assert_eq!(span.trace_id, vec![0x11; 16]);
    assert_eq!(span.span_id, vec![0x22; 8]);
    assert!(span.parent_span_id.is_empty(), "no parent flag, no parent");
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_001_000);
    assert_eq!(span.end_time_unix_nano, 1_700_000_000_000_004_000);
    assert_eq!(span.flags, 0x101, "sampled, parent not remote");
}

#[test]
fn server_span_without_route_is_named_by_method_only() {
    let span = convert_server(server("POST", "/x", "", "h", "1.2.3.4:5", 200));
    assert_eq!(span.name, "POST");
    assert_eq!(attr(&span, "http.route"), None);
    assert_eq!(attr_str(&span, "server.address"), Some("h"));
    assert_eq!(attr(&span, "server.port"), None, "no port in Host");
}

#[test]
fn server_status_zero_means_200() {
    let span = convert_server(server("GET", "/", "", "h", "a:1", 0));
    assert_eq!(attr_int(&span, "http.response.status_code"), Some(200));
    assert_eq!(span.status, None);
}

#[test]
fn server_5xx_is_an_error_and_4xx_is_not() {
    let span = convert_server(server("GET", "/", "", "h", "a:1", 503));
    let status = span.status.expect("5xx sets a status");
    assert_eq!(status.code, StatusCode::Error as i32);
    let span = convert_server(server("GET", "/", "", "h", "a:1", 404));
    assert_eq!(
        span.status, None,
        "a 4xx is the client's fault, not the server's"
    );
}

#[test]
fn parent_is_used_only_with_its_flag() {
    let mut record = server("GET", "/", "", "h", "a:1", 200);
    record.header.flags = SPAN_FLAG_HAS_PARENT;
    let span = convert_server(record);
    assert_eq!(span.parent_span_id, vec![0x33; 8]);
    assert_eq!(span.flags, 0x101);
    record.header.flags = SPAN_FLAG_HAS_PARENT | SPAN_FLAG_PARENT_REMOTE;
    let span = convert_server(record);
    assert_eq!(span.flags, 0x301, "remote parent is flagged");
    record.header.flags = SPAN_FLAG_PARENT_REMOTE;
    let span = convert_server(record);
    assert!(span.parent_span_id.is_empty());
    assert_eq!(span.flags, 0x101, "remote without parent is ignored");
}

#[test]
fn ipv6_addresses_are_split() {
    let span = convert_server(server("GET", "/", "", "[::1]:8080", "[fe80::1]:40000", 200));
    assert_eq!(attr_str(&span, "server.address"), Some("::1"));
    assert_eq!(attr_int(&span, "server.port"), Some(8080));
    assert_eq!(attr_str(&span, "client.address"), Some("fe80::1"));
    assert_eq!(attr_int(&span, "client.port"), Some(40000));
    assert_eq!(split_host_port("::1"), ("::1", None));
    assert_eq!(split_host_port("[::1]"), ("::1", None));
    assert_eq!(split_host_port("[::1"), ("[::1", None));
    assert_eq!(split_host_port("host:http"), ("host:http", None));
    assert_eq!(split_host_port("host:99999"), ("host:99999", None));
    assert_eq!(split_host_port(""), ("", None));
}

#[test]
fn protocol_versions() {
    assert_eq!(protocol_version("HTTP/1.1"), Some("1.1"));
    assert_eq!(protocol_version("HTTP/1.0"), Some("1.0"));
    assert_eq!(protocol_version("HTTP/2.0"), Some("2"));
    assert_eq!(protocol_version("HTTP/"), None);
    assert_eq!(protocol_version(""), None);
    assert_eq!(protocol_version("SPDY/3"), None);
}

#[test]
fn lengths_beyond_buffers_are_clamped_and_bad_utf8_is_replaced() {
    let mut record = server("GET", "/", "", "h", "a:1", 200);
    record.path = [b'a'; HTTP_PATH_LEN];
    record.path_len = u16::MAX;
    record.method[..2].copy_from_slice(&[0xff, 0xfe]);
    record.method_len = 2;
    record.header.flags = SPAN_FLAG_TRUNCATED;
    let span = convert_server(record);
    assert_eq!(
        attr_str(&span, "url.path").map(str::len),
        Some(HTTP_PATH_LEN)
    );
    assert_eq!(
        attr_str(&span, "http.request.method"),
        Some("\u{fffd}\u{fffd}")
    );
    assert_eq!(text(b"ab\0cd", 5), "ab", "stops at NUL");
    assert_eq!(text(b"abc", 0), "");
}

#[test]
fn end_before_start_is_clamped() {
    let mut record = server("GET", "/", "", "h", "a:1", 200);
    record.header.end_boot_ns = 1_500;
    let span = convert_server(record);
    assert_eq!(span.end_time_unix_nano, span.start_time_unix_nano);
}

#[test]
fn client_span_has_url_and_server_attributes() {
    let span = convert_client(client("GET", "http", "backend:9090", "/items", 200));
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(span.name, "GET");
    assert_eq!(attr_str(&span, "http.request.method"), Some("GET"));
    assert_eq!(
        attr_str(&span, "url.full"),
        Some("http://backend:9090/items")
    );
    assert_eq!(attr_str(&span, "server.address"), Some("backend"));
    assert_eq!(attr_int(&span, "server.port"), Some(9090));
    assert_eq!(attr_int(&span, "http.response.status_code"), Some(200));
    assert_eq!(attr_str(&span, "network.protocol.version"), Some("1.1"));
    assert_eq!(span.status, None);
}

#[test]
fn client_port_defaults_to_the_scheme() {
    let span = convert_client(client("GET", "https", "example.com", "/", 200));
    assert_eq!(attr_int(&span, "server.port"), Some(443));
    let span = convert_client(client("GET", "", "example.com", "/", 200));
    assert_eq!(attr_str(&span, "url.full"), Some("http://example.com/"));
    assert_eq!(attr_int(&span, "server.port"), Some(80));
}

#[test]
fn client_errors_for_4xx_and_failed_round_trips() {
    let span = convert_client(client("GET", "http", "h", "/", 404));
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    let span = convert_client(client("GET", "http", "h", "/", 399));
    assert_eq!(span.status, None);
    let mut record = client("GET", "http", "h", "/", 0);
    record.header.flags = SPAN_FLAG_ERROR;
    record.proto_len = 0;
    let span = convert_client(record);
    assert_eq!(
        span.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        attr(&span, "http.response.status_code"),
        None,
        "no response"
    );
    assert_eq!(attr(&span, "network.protocol.version"), None);
}

#[test]
fn pid_and_scope_come_from_the_record() {
    let record = GoSpanRecord::HttpClient(client("GET", "http", "h", "/", 200));
    assert_eq!(record_pid(&record), 4242);
    assert_eq!(record_scope(&record), SCOPE_NET_HTTP);
}

pub(crate) fn db(query: &str, system: u32, flags: u32) -> DbSpan {
    let (query, query_len) = fill::<DB_QUERY_LEN>(query.as_bytes());
    DbSpan {
        header: header(GO_SPAN_DB, flags),
        db_system: system,
        query_len,
        reserved: 0,
        query,
    }
}

#[test]
fn db_spans_carry_sanitized_text_operation_and_system() {
    let record = db(
        "SELECT name FROM users WHERE id = 42 AND email = 'a@b.c'",
        DB_SYSTEM_POSTGRESQL,
        SPAN_FLAG_HAS_PARENT,
    );
    let span = to_otlp_span(&GoSpanRecord::Db(record), &clock());
    assert_eq!(span.name, "SELECT users");
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(span.parent_span_id, vec![0x33; 8]);
    assert_eq!(attr_str(&span, "db.system.name"), Some("postgresql"));
    assert_eq!(attr_str(&span, "db.operation.name"), Some("SELECT"));
    assert_eq!(attr_str(&span, "db.collection.name"), Some("users"));
    assert_eq!(
        attr_str(&span, "db.query.text"),
        Some("SELECT name FROM users WHERE id = ? AND email = ?")
    );
    assert!(span.status.is_none());

    let failed = db(
        "insert into t values (1)",
        DB_SYSTEM_OTHER,
        SPAN_FLAG_ERROR | SPAN_FLAG_DB_EXEC,
    );
    let span = to_otlp_span(&GoSpanRecord::Db(failed), &clock());
    assert_eq!(attr_str(&span, "db.system.name"), Some("other_sql"));
    assert_eq!(span.name, "INSERT t");
    let status = span.status.expect("an error status");
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "exec failed");
    // Nothing recognizable: named after the system.
    let span = to_otlp_span(&GoSpanRecord::Db(db("", DB_SYSTEM_OTHER, 0)), &clock());
    assert_eq!(span.name, "other_sql");
    assert_eq!(attr_str(&span, "db.operation.name"), None);
}

pub(crate) fn grpc_server(method: &str, status: u32, ip: &[u8], port: u32) -> GrpcServerSpan {
    let (method, method_len) = fill::<GRPC_METHOD_LEN>(method.as_bytes());
    let (peer_ip, peer_ip_len) = fill::<IP_LEN>(ip);
    GrpcServerSpan {
        header: header(
            GO_SPAN_GRPC_SERVER,
            SPAN_FLAG_HAS_PARENT | SPAN_FLAG_PARENT_REMOTE,
        ),
        status_code: status,
        method_len,
        peer_ip_len,
        peer_port: port,
        reserved: 0,
        method,
        peer_ip,
    }
}

#[test]
fn grpc_server_spans_follow_rpc_conventions() {
    let record = grpc_server("/grpc.health.v1.Health/Check", 0, &[127, 0, 0, 1], 4242);
    let span = to_otlp_span(&GoSpanRecord::GrpcServer(record), &clock());
    assert_eq!(span.name, "grpc.health.v1.Health/Check");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(attr_str(&span, "rpc.system"), Some("grpc"));
    assert_eq!(
        attr_str(&span, "rpc.service"),
        Some("grpc.health.v1.Health")
    );
    assert_eq!(attr_str(&span, "rpc.method"), Some("Check"));
    assert_eq!(attr_int(&span, "rpc.grpc.status_code"), Some(0));
    assert_eq!(attr_str(&span, "client.address"), Some("127.0.0.1"));
    assert_eq!(attr_int(&span, "client.port"), Some(4242));
    assert_eq!(span.flags & 0x300, 0x300, "remote parent");
    assert!(span.status.is_none());
    // NOT_FOUND is the caller's problem, INTERNAL the server's.
    let not_found = grpc_server("/s.S/M", 5, &[], 0);
    let span = to_otlp_span(&GoSpanRecord::GrpcServer(not_found), &clock());
    assert!(span.status.is_none());
    assert_eq!(attr_str(&span, "client.address"), None);
    let mut v4_in_v6 = [0u8; 16];
    v4_in_v6[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 9]);
    let internal = grpc_server("/s.S/M", 13, &v4_in_v6, 1);
    let span = to_otlp_span(&GoSpanRecord::GrpcServer(internal), &clock());
    assert_eq!(attr_str(&span, "client.address"), Some("10.0.0.9"));
    assert_eq!(span.status.expect("error").message, "gRPC INTERNAL");
}

#[test]
fn grpc_client_spans_name_the_target_and_fail_on_any_code() {
    let client = |target: &str, status: u32, flags: u32| {
        let (method, method_len) = fill::<GRPC_METHOD_LEN>(b"/pkg.Greeter/SayHello");
        let (target, target_len) = fill::<GRPC_TARGET_LEN>(target.as_bytes());
        let record = GrpcClientSpan {
            header: header(GO_SPAN_GRPC_CLIENT, flags),
            status_code: status,
            method_len,
            target_len,
            method,
            target,
        };
        to_otlp_span(&GoSpanRecord::GrpcClient(record), &clock())
    };
    let span = client("dns:///greeter.default:50051", 0, SPAN_FLAG_HAS_PARENT);
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(span.name, "pkg.Greeter/SayHello");
    assert_eq!(attr_str(&span, "server.address"), Some("greeter.default"));
    assert_eq!(attr_int(&span, "server.port"), Some(50051));
    assert!(span.status.is_none());
    let span = client("127.0.0.1:7", 5, SPAN_FLAG_ERROR);
    assert_eq!(attr_str(&span, "server.address"), Some("127.0.0.1"));
    assert_eq!(attr_int(&span, "rpc.grpc.status_code"), Some(5));
    assert_eq!(span.status.expect("error").message, "gRPC NOT_FOUND");
    let span = client("passthrough:///[::1]:9", 99, SPAN_FLAG_ERROR);
    assert_eq!(attr_str(&span, "server.address"), Some("::1"));
    assert_eq!(span.status.expect("error").message, "gRPC UNKNOWN");
}
