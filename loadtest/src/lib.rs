//! sdsim-loadtest (being written).
