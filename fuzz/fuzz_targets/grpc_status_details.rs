//! Fuzzes the `grpc-status-details-bin` decoder and the failure a remote status stands for:
//! arbitrary trailer values never panic, and whatever failure a status decodes to survives
//! another trip through the wire unchanged (what the gateway rebuilds is what the service sent).
#![no_main]

use base64::Engine;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use sdsim_net::grpc::{Code, Status};
use sdsim_contract::{status as status_of, ServiceError};
use sdsim_projects::Failure;

fuzz_target!(|data: &[u8]| {
    let Some((&code, data)) = data.split_first() else {
        return;
    };
    // As sent (any header-safe bytes) and as a peer would encode a message (base64).
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let values = [HeaderValue::from_bytes(data).ok(), HeaderValue::from_str(&encoded).ok()];
    for value in values.iter().flatten() {
        let mut status = Status::new(code_of(code), "message");
        status.details = Status::details_from(Some(value));
        let failure = Failure::from_status(&status);
        let mut headers = http::HeaderMap::new();
        status_of(&failure).write(&mut headers);
        let mut again = Status::new(Code::Unknown, "");
        again.details = Status::details_from(headers.get("grpc-status-details-bin"));
        again.code = status_of(&failure).code;
        again.message = status_of(&failure).message;
        assert_eq!(Failure::from_status(&again), failure);
    }
});

fn code_of(n: u8) -> Code {
    match n % 4 {
        0 => Code::InvalidArgument,
        1 => Code::NotFound,
        2 => Code::Unavailable,
        _ => Code::Internal,
    }
}
