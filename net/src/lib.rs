//! sdsim-net (being written).
