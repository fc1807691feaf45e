//! anebert-build
