//! anebert-macros
