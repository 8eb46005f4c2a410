//! HTTP/1.1 transport over TCP and Unix sockets: `POST /v1/opamp` (protobuf in, protobuf out)
//! and the local status API `GET /v1/agents`. Enforces the protocol hygiene real clients rely
//! on: lenient Content-Type, exact reply type, gzip both ways, body limit (413), bad input
//! (400), bounded concurrency (503 + Retry-After), optional mandatory device id (401).
#![deny(clippy::indexing_slicing)]

use std::{convert::Infallible, io::Read, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderMap, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prost::Message;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{Semaphore, watch},
};
use tracing::{debug, warn};

use super::{session::Sessions, wire};

pub const OPAMP_PATH: &str = "/v1/opamp";
pub const AGENTS_PATH: &str = "/v1/agents";
pub const DEVICE_ID_HEADER: &str = "x-odigos-deviceid";
const PROTOBUF: &str = "application/x-protobuf";
/// Replies smaller than this are not worth compressing.
const GZIP_MIN_BYTES: usize = 128;
/// `Retry-After` on 503: the spec's recommended minimum retry interval.
const RETRY_AFTER_SECS: &str = "30";

/// Time allowed to receive a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Transport limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, after decompression.
    pub max_body_bytes: usize,
    /// Requests handled at once; more get 503.
    pub max_in_flight: usize,
    /// 401 without `X-Odigos-DeviceId` (the 2024 server's rule).
    pub require_device_id: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_in_flight: 1024,
            require_device_id: false,
        }
    }
}

/// Shared by all connections of all listeners.
pub struct Handler {
    sessions: Arc<Sessions>,
    limits: Limits,
    in_flight: Arc<Semaphore>,
}

type Reply = Response<Full<Bytes>>;

fn plain(status: StatusCode, text: &str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `application/x-protobuf`, ignoring case, surrounding spaces and parameters.
pub fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(PROTOBUF))
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*` with a non-zero q).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

impl Handler {
    pub fn new(sessions: Arc<Sessions>, limits: Limits) -> Arc<Self> {
        let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
        Arc::new(Self {
            sessions,
            limits,
            in_flight,
        })
    }

    /// The OpAMP listener's routes.
    pub async fn opamp(self: Arc<Self>, req: Request<Incoming>) -> Result<Reply, Infallible> {
        if req.uri().path() != OPAMP_PATH {
            return Ok(plain(StatusCode::NOT_FOUND, "not found"));
        }
        if req.method() != hyper::Method::POST {
            return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
        }
        // Plain HTTP only: WebSocket upgrades and other types are refused.
        if !is_protobuf(req.headers()) {
            return Ok(plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/x-protobuf",
            ));
        }
        let device_id = req
            .headers()
            .get(DEVICE_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v.len() <= 256);
        if self.limits.require_device_id && device_id.is_none() {
            return Ok(plain(
                StatusCode::UNAUTHORIZED,
                "X-Odigos-DeviceId header is required",
            ));
        }
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            let mut reply = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight",
            );
            reply.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            return Ok(reply);
        };
        let gzip_reply = accepts_gzip(req.headers());
        // A stalled body must not hold a slot forever (slow-loris).
        let body = match tokio::time::timeout(BODY_TIMEOUT, self.read_body(req)).await {
            Ok(Ok(body)) => body,
            Ok(Err(reply)) => return Ok(reply),
            Err(_) => {
                return Ok(plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "body not received in time",
                ));
            }
        };
        let msg = match wire::decode_agent_to_server(&body) {
            Ok(msg) => msg,
            Err(error) => {
                debug!(%error, "rejected OpAMP request");
                return Ok(plain(StatusCode::BAD_REQUEST, &error.to_string()));
            }
        };
        let answer = self.sessions.handle(msg, device_id.as_deref()).await;
        Ok(protobuf_reply(answer.encode_to_vec(), gzip_reply))
    }

    /// Reads the body within the limit, gunzipping if needed; the error is the reply to send.
    async fn read_body(&self, req: Request<Incoming>) -> Result<Vec<u8>, Reply> {
        let max = self.limits.max_body_bytes;
        let too_large = || {
            plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body exceeds {max} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let gzipped = match req
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str())
        {
            None => false,
            Some(Ok(v)) if v.trim().eq_ignore_ascii_case("identity") => false,
            Some(Ok(v)) if v.trim().eq_ignore_ascii_case("gzip") => true,
            Some(_) => {
                return Err(plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Content-Encoding must be gzip or identity",
                ));
            }
        };
        let raw = match Limited::new(req.into_body(), max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error)
                if error
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(too_large());
            }
            Err(error) => {
                return Err(plain(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read body: {error}"),
                ));
            }
        };
        if !gzipped {
            return Ok(raw.to_vec());
        }
        // The limit applies after decompression (gzip bombs).
        let mut out = Vec::new();
        let mut decoder = flate2::read::GzDecoder::new(raw.as_ref()).take(max as u64 + 1);
        match decoder.read_to_end(&mut out) {
            Ok(n) if n > max => Err(too_large()),
            Ok(_) => Ok(out),
            Err(error) => Err(plain(
                StatusCode::BAD_REQUEST,
                &format!("invalid gzip body: {error}"),
            )),
        }
    }

    /// The status listener's routes.
    pub async fn status(self: Arc<Self>, req: Request<Incoming>) -> Result<Reply, Infallible> {
        if req.uri().path() != AGENTS_PATH {
            return Ok(plain(StatusCode::NOT_FOUND, "not found"));
        }
        if req.method() != hyper::Method::GET {
            return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use GET"));
        }
        match serde_json::to_vec(&self.sessions.status()) {
            Ok(json) => {
                let mut reply = Response::new(Full::new(Bytes::from(json)));
                reply.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(reply)
            }
            Err(error) => Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string())),
        }
    }
}

fn protobuf_reply(body: Vec<u8>, gzip: bool) -> Reply {
    let mut encoded = None;
    if gzip && body.len() >= GZIP_MIN_BYTES {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if std::io::Write::write_all(&mut encoder, &body).is_ok() {
            encoded = encoder.finish().ok();
        }
    }
    let compressed = encoded.is_some();
    let mut reply = Response::new(Full::new(Bytes::from(encoded.unwrap_or(body))));
    // Exactly this value: the Elastic client compares it byte for byte.
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    if compressed {
        reply
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    reply
}

/// Which routes a listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Routes {
    OpAmp,
    Status,
}

/// Serves one accepted connection until it closes or `shutdown` fires (then finishes the
/// request in progress and closes, so restarted servers are not shadowed by kept-alive peers).
pub async fn serve_connection<S>(
    io: S,
    handler: Arc<Handler>,
    routes: Routes,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let handler = handler.clone();
        async move {
            match routes {
                Routes::OpAmp => handler.opamp(req).await,
                Routes::Status => handler.status(req).await,
            }
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result
        && !error.is_incomplete_message()
    {
        warn!(%error, "OpAMP connection ended with an error");
    }
}

/// Resolves once `stop` is set (or its sender is gone). Returns nothing, so no watch guard
/// lives across an await.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn content_type_is_lenient() {
        for ok in [
            " application/x-protobuf",
            "Application/X-Protobuf; charset=binary",
            "application/x-protobuf",
        ] {
            assert!(is_protobuf(&headers(&[(header::CONTENT_TYPE, ok)])), "{ok}");
        }
        assert!(!is_protobuf(&headers(&[(
            header::CONTENT_TYPE,
            "application/json"
        )])));
        assert!(!is_protobuf(&HeaderMap::new()));
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip, deflate"
        )])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "*")])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "identity"
        )])));
        assert!(!accepts_gzip(&headers(&[(
            header::ACCEPT_ENCODING,
            "gzip;q=0"
        )])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
