//! Checkers
