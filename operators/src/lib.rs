//! KaiABC science core.
