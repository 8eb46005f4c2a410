//! An OTLP/gRPC trace receiver for tests: a tonic `TraceService` on `127.0.0.1:0` that
//! records every request, and can be scripted to fail the first calls with given codes.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value},
    trace::v1::Span,
};
use tokio::{
    net::TcpListener,
    sync::{Notify, oneshot},
    task::JoinHandle,
    time::{Instant, timeout_at},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

/// How long a test waits for spans it expects.
pub const RECEIVE_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct State {
    requests: Mutex<Vec<ExportTraceServiceRequest>>,
    /// Codes to answer the next calls with, front first; empty means OK.
    failures: Mutex<VecDeque<Code>>,
    attempts: Mutex<usize>,
    changed: Notify,
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        *self
            .0
            .attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        let failure = self
            .0
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        let result = match failure {
            Some(code) => Err(Status::new(code, "scripted failure")),
            None => {
                self.0
                    .requests
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(request.into_inner());
                Ok(Response::new(ExportTraceServiceResponse::default()))
            }
        };
        self.0.changed.notify_waiters();
        result
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

/// One received span with its resource attributes and scope name.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub resource: Vec<KeyValue>,
    pub scope: String,
    pub span: Span,
}

impl OtlpReceiver {
    /// A receiver that accepts everything.
    pub async fn start() -> Self {
        Self::start_failing(Vec::new()).await
    }

    /// A receiver that answers its first calls with `failures`, in order, then accepts.
    pub async fn start_failing(failures: Vec<Code>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(State {
            failures: Mutex::new(failures.into()),
            ..State::default()
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(Service(Arc::clone(&state)));
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("OTLP receiver serves");
        });
        Self {
            addr,
            state,
            stop: Some(stop),
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, for `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Export calls received, failed ones included.
    pub fn attempts(&self) -> usize {
        *self
            .state
            .attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The requests accepted so far.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every accepted span, flattened.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut out = Vec::new();
        for request in self
            .state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope_spans in &resource_spans.scope_spans {
                    let scope = scope_spans
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for span in &scope_spans.spans {
                        out.push(ReceivedSpan {
                            resource: resource.clone(),
                            scope: scope.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Waits until at least `count` spans were accepted; panics after [`RECEIVE_DEADLINE`].
    pub async fn wait_for_spans(&self, count: usize) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + RECEIVE_DEADLINE;
        loop {
            let changed = self.state.changed.notified();
            let spans = self.spans();
            if spans.len() >= count {
                return spans;
            }
            if timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "timed out waiting for {count} spans; got {} in {} calls",
                    spans.len(),
                    self.attempts()
                );
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

/// The value of attribute `key`, as a string (ints are formatted).
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}
