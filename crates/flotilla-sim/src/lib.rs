//! flotilla-sim.
