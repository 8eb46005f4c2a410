//! Process-lifecycle probe tests (filled in next).
