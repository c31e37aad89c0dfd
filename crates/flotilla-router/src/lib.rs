//! flotilla-router.
