//! sdsim-simulation (being written).
