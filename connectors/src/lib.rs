//! Sources and sinks (MQTT, Kafka, Parquet, files, HTTP) of KaiABC Stream.
