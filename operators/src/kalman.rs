//! Per-node Kalman filter over temperature, humidity and pressure.
