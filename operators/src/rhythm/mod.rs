//! Rhythm analysis of unevenly sampled series: Lomb–Scargle periodogram and cosinor fits.
