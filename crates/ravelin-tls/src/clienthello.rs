//! (issue 14: being written)
