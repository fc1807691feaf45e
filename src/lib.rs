//! anebert
