//! The environment a container's image defines, from the container runtime over CRI
//! `runtime.v1` (odigos.md §4.5): `ContainerStatus` names the image, `ImageStatus` with
//! `verbose` returns its OCI config, whose `Env` holds the image's variables. Odigos records the
//! ones its agents append to (`envFromContainerRuntime`), so the webhook extends the image's
//! value instead of replacing it; the process's own environment cannot tell an image variable
//! from one the pod spec set.
//!
//! Every call has a 5 s deadline (as Odigos'), and responses are bounded by tonic's 4 MiB
//! decode limit; the image config is parsed with serde_json, which bounds nesting.

use std::{path::PathBuf, time::Duration};

use device_plugin_proto::cri::{
    DEFAULT_SOCKETS,
    v1::{
        ContainerStatusRequest, ImageSpec, ImageStatusRequest,
        image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    },
};
use serde::Deserialize;
use tonic::transport::Channel;

/// Odigos' deadline for one CRI call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("no container runtime socket found (tried {tried})")]
    NoSocket { tried: String },
    #[error("cannot connect to the container runtime at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the container runtime's {call} failed")]
    Call {
        call: &'static str,
        #[source]
        source: tonic::Status,
    },
    #[error("the container runtime's {call} did not answer within {CALL_TIMEOUT:?}")]
    Timeout { call: &'static str },
    #[error("the container runtime does not know the image of container {container_id}")]
    NoImage { container_id: String },
    #[error("the container runtime returned no image config for {image}")]
    NoConfig { image: String },
    #[error("the image config from the container runtime is not valid JSON")]
    Config(#[source] serde_json::Error),
}

/// Where the runtime listens: `CONTAINER_RUNTIME_SOCK` when set, else the first of Odigos'
/// default sockets that exists under the host's `/run` (mounted at `run_dir`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriSocket {
    pub explicit: Option<PathBuf>,
    pub run_dir: PathBuf,
}

impl Default for CriSocket {
    fn default() -> Self {
        Self {
            explicit: None,
            run_dir: PathBuf::from("/run"),
        }
    }
}

impl CriSocket {
    fn resolve(&self) -> Result<PathBuf, CriError> {
        if let Some(path) = &self.explicit {
            return Ok(path.clone());
        }
        let candidates = DEFAULT_SOCKETS
            .iter()
            .map(|socket| self.run_dir.join(socket));
        candidates
            .clone()
            .find(|path| path.exists())
            .ok_or_else(|| CriError::NoSocket {
                tried: candidates
                    .map(|path| path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// A connection to the container runtime.
pub struct Cri {
    channel: Channel,
}

impl Cri {
    pub async fn connect(socket: &CriSocket) -> Result<Self, CriError> {
        let path = socket.resolve()?;
        let channel = crate::device_plugin::connect_unix(&path)
            .await
            .map_err(|source| CriError::Connect {
                socket: path,
                source,
            })?;
        Ok(Self { channel })
    }

    /// The image's environment of container `container_id` (without the `containerd://`
    /// prefix), as `NAME=value` pairs split at the first `=`.
    pub async fn image_env(&self, container_id: &str) -> Result<Vec<(String, String)>, CriError> {
        let mut runtime = RuntimeServiceClient::new(self.channel.clone());
        let status = call(
            "ContainerStatus",
            runtime.container_status(ContainerStatusRequest {
                container_id: container_id.to_owned(),
                verbose: false,
            }),
        )
        .await?
        .status;
        // The image id when the runtime gives one (exactly what runs), else the spec's name.
        let image = status
            .and_then(|s| {
                Some(s.image_ref)
                    .filter(|r| !r.is_empty())
                    .or_else(|| s.image.map(|i| i.image).filter(|i| !i.is_empty()))
            })
            .ok_or_else(|| CriError::NoImage {
                container_id: container_id.to_owned(),
            })?;
        let mut images = ImageServiceClient::new(self.channel.clone());
        let response = call(
            "ImageStatus",
            images.image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..ImageSpec::default()
                }),
                verbose: true,
            }),
        )
        .await?;
        let info = response
            .info
            .get("info")
            .ok_or(CriError::NoConfig { image })?;
        env_from_image_info(info)
    }
}

async fn call<T>(
    call: &'static str,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CriError> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(source)) => Err(CriError::Call { call, source }),
        Err(_) => Err(CriError::Timeout { call }),
    }
}

/// The verbose `ImageStatus` info: containerd nests the OCI image under `imageSpec`, CRI-O
/// gives the image itself; either way its `config.Env` is the list.
#[derive(Deserialize)]
struct ImageInfo {
    #[serde(rename = "imageSpec")]
    image_spec: Option<OciImage>,
    #[serde(flatten)]
    image: OciImage,
}

#[derive(Default, Deserialize)]
struct OciImage {
    #[serde(default)]
    config: Option<OciConfig>,
}

#[derive(Default, Deserialize)]
struct OciConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
}

/// The `Env` of an image from the runtime's verbose info JSON.
pub fn env_from_image_info(info: &str) -> Result<Vec<(String, String)>, CriError> {
    let info: ImageInfo = serde_json::from_str(info).map_err(CriError::Config)?;
    let env = info
        .image_spec
        .and_then(|spec| spec.config)
        .or(info.image.config)
        .and_then(|config| config.env)
        .unwrap_or_default();
    Ok(env
        .into_iter()
        .filter_map(|entry| {
            let (name, value) = entry.split_once('=')?;
            (!name.is_empty()).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn pairs(env: &[(&str, &str)]) -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn containerd_and_cri_o_image_configs() {
        let containerd = r#"{"chainID":"sha256:1","imageSpec":{"architecture":"amd64",
            "config":{"Env":["PATH=/usr/bin","JAVA_TOOL_OPTIONS=-Xmx1g -Da=b=c"],"Cmd":["java"]}}}"#;
        assert_eq!(
            env_from_image_info(containerd).expect("valid"),
            pairs(&[
                ("PATH", "/usr/bin"),
                ("JAVA_TOOL_OPTIONS", "-Xmx1g -Da=b=c")
            ])
        );
        let crio = r#"{"labels":{},"config":{"Env":["NODE_OPTIONS=--require x"]}}"#;
        assert_eq!(
            env_from_image_info(crio).expect("valid"),
            pairs(&[("NODE_OPTIONS", "--require x")])
        );
    }

    #[test]
    fn odd_entries_are_skipped_and_bad_json_is_an_error() {
        let info = r#"{"imageSpec":{"config":{"Env":["NOEQUALS","=x","EMPTY="]}}}"#;
        assert_eq!(
            env_from_image_info(info).expect("valid"),
            pairs(&[("EMPTY", "")])
        );
        assert!(env_from_image_info(r#"{"imageSpec":{}}"#).is_ok_and(|e| e.is_empty()));
        assert!(matches!(
            env_from_image_info("{\"imageSpec\":"),
            Err(CriError::Config(_))
        ));
        assert!(matches!(
            env_from_image_info(r#"{"config":{"Env":"not a list"}}"#),
            Err(CriError::Config(_))
        ));
    }

    #[test]
    fn the_explicit_socket_wins_else_the_first_default_that_exists() {
        let run = tempfile::tempdir().expect("tempdir");
        let socket = CriSocket {
            explicit: Some("/custom/cri.sock".into()),
            run_dir: run.path().to_owned(),
        };
        assert_eq!(
            socket.resolve().expect("explicit"),
            Path::new("/custom/cri.sock")
        );
        let probed = CriSocket {
            explicit: None,
            ..socket
        };
        let missing = probed.resolve().expect_err("nothing there");
        assert!(missing.to_string().contains("crio/crio.sock"), "{missing}");
        for dir in ["crio", "k3s/containerd"] {
            std::fs::create_dir_all(run.path().join(dir)).expect("dir");
        }
        std::fs::write(run.path().join("k3s/containerd/containerd.sock"), "").expect("k3s");
        std::fs::write(run.path().join("crio/crio.sock"), "").expect("crio");
        assert_eq!(
            probed.resolve().expect("found"),
            run.path().join("crio/crio.sock"),
            "Odigos' order: CRI-O before k3s"
        );
    }
}
