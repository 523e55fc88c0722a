//! Sources and sinks of KaiABC Stream: sensor-log files (CSV, JSONL, Parquet), the Parquet lake
//! with atomic commits, and SQL over the lake through DataFusion. MQTT, Kafka and HTTP join in
//! issue 4.

pub mod file;
pub mod kafka;
pub mod lake;
pub mod mqtt;
pub mod sink;

pub use sink::Sink;
