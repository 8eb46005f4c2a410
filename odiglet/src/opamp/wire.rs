//! OpAMP protobuf messages (the subset a status and config server needs), written from the
//! field tables of the OpAMP specification, plus bounded decode and encode.
//!
//! Field numbers and wire types are the interface; names follow the spec. Fields we never read
//! (package statuses, custom messages, …) are left out: prost skips unknown fields.
#![deny(clippy::indexing_slicing)]

use std::collections::HashMap;

use prost::Message;

/// `AgentCapabilities` bits we act on.
pub mod agent_caps {
    pub const REPORTS_STATUS: u64 = 0x1;
    pub const ACCEPTS_REMOTE_CONFIG: u64 = 0x2;
    pub const REPORTS_HEALTH: u64 = 0x800;
    pub const REPORTS_REMOTE_CONFIG: u64 = 0x1000;
    pub const REPORTS_HEARTBEAT: u64 = 0x2000;
}

/// `ServerCapabilities` we announce: AcceptsStatus | OffersRemoteConfig | AcceptsEffectiveConfig.
pub const SERVER_CAPABILITIES: u64 = 0x1 | 0x2 | 0x4;
/// `ServerToAgentFlags_ReportFullState`.
pub const FLAG_REPORT_FULL_STATE: u64 = 0x1;
/// Longest `instance_uid` accepted: spec uids are 16 bytes, Odigos clients send 36-byte text.
pub const MAX_INSTANCE_UID: usize = 128;

#[derive(Clone, PartialEq, Message)]
pub struct AgentToServer {
    #[prost(bytes = "vec", tag = "1")]
    pub instance_uid: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub sequence_num: u64,
    #[prost(message, optional, tag = "3")]
    pub agent_description: Option<AgentDescription>,
    #[prost(uint64, tag = "4")]
    pub capabilities: u64,
    #[prost(message, optional, tag = "5")]
    pub health: Option<ComponentHealth>,
    #[prost(message, optional, tag = "7")]
    pub remote_config_status: Option<RemoteConfigStatus>,
    #[prost(message, optional, tag = "9")]
    pub agent_disconnect: Option<AgentDisconnect>,
    #[prost(uint64, tag = "10")]
    pub flags: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ServerToAgent {
    #[prost(bytes = "vec", tag = "1")]
    pub instance_uid: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub error_response: Option<ServerErrorResponse>,
    #[prost(message, optional, tag = "3")]
    pub remote_config: Option<AgentRemoteConfig>,
    #[prost(message, optional, tag = "4")]
    pub connection_settings: Option<ConnectionSettingsOffers>,
    #[prost(uint64, tag = "6")]
    pub flags: u64,
    #[prost(uint64, tag = "7")]
    pub capabilities: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct AgentDescription {
    #[prost(message, repeated, tag = "1")]
    pub identifying_attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "2")]
    pub non_identifying_attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        #[prost(bytes = "vec", tag = "7")]
        BytesValue(Vec<u8>),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ComponentHealth {
    #[prost(bool, tag = "1")]
    pub healthy: bool,
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(string, tag = "3")]
    pub last_error: String,
    #[prost(string, tag = "4")]
    pub status: String,
    #[prost(fixed64, tag = "5")]
    pub status_time_unix_nano: u64,
    #[prost(map = "string, message", tag = "6")]
    pub component_health_map: HashMap<String, ComponentHealth>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RemoteConfigStatus {
    #[prost(bytes = "vec", tag = "1")]
    pub last_remote_config_hash: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub status: i32,
    #[prost(string, tag = "3")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct AgentDisconnect {}

#[derive(Clone, PartialEq, Message)]
pub struct AgentRemoteConfig {
    #[prost(message, optional, tag = "1")]
    pub config: Option<AgentConfigMap>,
    #[prost(bytes = "vec", tag = "2")]
    pub config_hash: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AgentConfigMap {
    #[prost(map = "string, message", tag = "1")]
    pub config_map: HashMap<String, AgentConfigFile>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AgentConfigFile {
    #[prost(bytes = "vec", tag = "1")]
    pub body: Vec<u8>,
    #[prost(string, tag = "2")]
    pub content_type: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ServerErrorResponse {
    /// `ServerErrorResponseType`: 0 Unknown, 1 BadRequest, 2 Unavailable.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub error_message: String,
    #[prost(message, optional, tag = "3")]
    pub retry_info: Option<RetryInfo>,
}

pub const ERROR_BAD_REQUEST: i32 = 1;
pub const ERROR_UNAVAILABLE: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(uint64, tag = "1")]
    pub retry_after_nanoseconds: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ConnectionSettingsOffers {
    #[prost(bytes = "vec", tag = "1")]
    pub hash: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub opamp: Option<OpAmpConnectionSettings>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OpAmpConnectionSettings {
    #[prost(uint64, tag = "4")]
    pub heartbeat_interval_seconds: u64,
}

/// Why a request body is not an acceptable `AgentToServer`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid AgentToServer message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("instance_uid is empty")]
    EmptyUid,
    #[error("instance_uid is {0} bytes, more than {MAX_INSTANCE_UID}")]
    UidTooLong(usize),
}

/// Decodes an `AgentToServer` and checks its `instance_uid`. prost bounds nesting (recursion
/// limit) and every length by the input size, which the HTTP layer bounds.
pub fn decode_agent_to_server(body: &[u8]) -> Result<AgentToServer, DecodeError> {
    let message = AgentToServer::decode(body)?;
    match message.instance_uid.len() {
        0 => Err(DecodeError::EmptyUid),
        n if n > MAX_INSTANCE_UID => Err(DecodeError::UidTooLong(n)),
        _ => Ok(message),
    }
}

impl AnyValue {
    /// Renders a scalar as a string (how Odigos stringifies identifying attributes).
    pub fn to_text(&self) -> String {
        use any_value::Value;
        match &self.value {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::BoolValue(b)) => b.to_string(),
            Some(Value::IntValue(i)) => i.to_string(),
            Some(Value::DoubleValue(d)) => d.to_string(),
            Some(Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::ArrayValue(_) | Value::KvlistValue(_)) | None => String::new(),
        }
    }

    /// An integer value, also accepted as a decimal string.
    pub fn to_int(&self) -> Option<i64> {
        match &self.value {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            Some(any_value::Value::StringValue(s)) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

impl AgentDescription {
    /// The identifying attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&AnyValue> {
        self.identifying_attributes
            .iter()
            .chain(&self.non_identifying_attributes)
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
    }
}

/// Renders an instance uid: 16 bytes as a canonical UUID, anything else as lossy UTF-8.
pub fn uid_text(uid: &[u8]) -> String {
    if uid.len() == 16 {
        let hex: String = uid.iter().map(|b| format!("{b:02x}")).collect();
        let (a, rest) = hex.split_at(8);
        let (b, rest) = rest.split_at(4);
        let (c, rest) = rest.split_at(4);
        let (d, e) = rest.split_at(4);
        format!("{a}-{b}-{c}-{d}-{e}")
    } else {
        String::from_utf8_lossy(uid).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        let empty = AgentToServer::default().encode_to_vec();
        assert!(matches!(
            decode_agent_to_server(&empty),
            Err(DecodeError::EmptyUid)
        ));
        let long = AgentToServer {
            instance_uid: vec![1; 129],
            ..Default::default()
        };
        assert!(matches!(
            decode_agent_to_server(&long.encode_to_vec()),
            Err(DecodeError::UidTooLong(129))
        ));
        assert!(decode_agent_to_server(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn round_trip_and_uid_text() {
        let msg = AgentToServer {
            instance_uid: (0u8..16).collect(),
            sequence_num: 7,
            health: Some(ComponentHealth {
                status: "Healthy".into(),
                start_time_unix_nano: u64::MAX,
                ..Default::default()
            }),
            ..Default::default()
        };
        let back = decode_agent_to_server(&msg.encode_to_vec()).expect("decodes");
        assert_eq!(back, msg);
        assert_eq!(
            uid_text(&back.instance_uid),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
        assert_eq!(uid_text(b"abc"), "abc");
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowing() {
        // 200 nested ComponentHealth maps: prost's recursion limit must refuse it.
        let mut health = ComponentHealth::default();
        for _ in 0..200 {
            let mut outer = ComponentHealth::default();
            outer.component_health_map.insert("x".into(), health);
            health = outer;
        }
        let msg = AgentToServer {
            instance_uid: vec![1],
            health: Some(health),
            ..Default::default()
        };
        assert!(decode_agent_to_server(&msg.encode_to_vec()).is_err());
    }
}
