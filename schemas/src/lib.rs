//! Event, state and storage types shared by every crate of KaiABC Stream.
