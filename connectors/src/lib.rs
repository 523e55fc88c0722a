//! Sources and sinks of KaiABC Stream: sensor-log files (CSV, JSONL, Parquet), the Parquet lake
//! with atomic commits, SQL over the lake through DataFusion, MQTT, Kafka, and the write-ahead
//! log that holds what the embedded pipeline acknowledged.

pub mod address_limits;
pub mod file;
pub mod kafka;
pub mod lake;
pub mod mqtt;
pub mod ports;
pub mod sink;
pub mod wal;

pub use sink::Sink;
