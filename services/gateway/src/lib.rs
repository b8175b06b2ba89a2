//! sdsim-gateway (being written).
