//! The OTLP trace messages, generated from `proto/opentelemetry/` (the subset the exporter
//! writes; field numbers as in opentelemetry-proto). The modules nest as the packages do, so
//! the generated cross-package paths (`super::super::…`) resolve.

/// `opentelemetry.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod opentelemetry {
    /// `opentelemetry.proto.*`.
    pub mod proto {
        /// `opentelemetry.proto.common`.
        pub mod common {
            /// `opentelemetry.proto.common.v1`.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.common.v1.rs"
                ));
            }
        }
        /// `opentelemetry.proto.resource`.
        pub mod resource {
            /// `opentelemetry.proto.resource.v1`.
            pub mod v1 {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/opentelemetry.proto.resource.v1.rs"
                ));
            }
        }
        /// `opentelemetry.proto.trace`.
        pub mod trace {
            /// `opentelemetry.proto.trace.v1`.
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.trace.v1.rs"));
            }
        }
        /// `opentelemetry.proto.collector`.
        pub mod collector {
            /// `opentelemetry.proto.collector.trace`.
            pub mod trace {
                /// `opentelemetry.proto.collector.trace.v1`.
                pub mod v1 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/opentelemetry.proto.collector.trace.v1.rs"
                    ));
                }
            }
        }
    }
}

pub use opentelemetry::proto::collector::trace::v1 as collector;
pub use opentelemetry::proto::common::v1 as common;
pub use opentelemetry::proto::resource::v1 as resource;
pub use opentelemetry::proto::trace::v1 as trace;
