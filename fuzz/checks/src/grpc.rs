//! gRPC message frames (`sdsim_net::grpc::frame`), the `grpc-status-details-bin` trailer
//! (`sdsim_net::grpc::Status`, and the projects' error table: `sdsim_contract::status`,
//! `Failure::from_status`), and server reflection requests (`sdsim_net::grpc::reflection`).

use crate::alloc::peak_while;
use crate::ALLOCATION_SLACK;
use base64::Engine;
use bytes::BytesMut;
use http::HeaderValue;
use sdsim_contract::{status as status_of, ServiceError};
use sdsim_net::grpc::frame::{decode, encode};
use sdsim_net::grpc::{Code, Status};
use sdsim_projects::Failure;

const MAX: usize = 64 * 1024;

/// `grpc_frames` (first byte: bit 0 = gzip accepted, bit 1 = re-encode compressed): never a
/// message over the limit (after gzip too) and never more held than the limit allows; a
/// decoded message re-encodes to a frame that decodes to itself.
pub fn frames(data: &[u8]) {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let gzip = flags & 1 == 1;
    let mut buf = BytesMut::from(data);
    loop {
        let (result, held) = peak_while(|| decode(&mut buf, MAX, gzip));
        // A gzip bomb stops at the limit: the output, its growth, and the inflate state.
        let bound = data.len() + 3 * MAX + ALLOCATION_SLACK;
        assert!(
            held <= bound,
            "one decode held {held} bytes (bound {bound})"
        );
        let Ok(Some(message)) = result else {
            break;
        };
        assert!(message.len() <= MAX);
        let mut again = BytesMut::from(&encode(&message, flags & 2 == 2)[..]);
        let round = decode(&mut again, MAX, true).expect("our own frame decodes");
        assert_eq!(round.as_deref(), Some(&message[..]));
    }
}

fn code_of(n: u8) -> Code {
    match n % 4 {
        0 => Code::InvalidArgument,
        1 => Code::NotFound,
        2 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// `grpc_status_details` (first byte picks the status code): any trailer value, as sent or
/// base64-encoded as a peer would, decodes without a panic, and the failure it stands for
/// survives another trip over the wire unchanged (what the gateway rebuilds is what the
/// service sent).
pub fn status_details(data: &[u8]) {
    let Some((&code, data)) = data.split_first() else {
        return;
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let values = [
        HeaderValue::from_bytes(data).ok(),
        HeaderValue::from_str(&encoded).ok(),
    ];
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
}

/// `grpc_reflection`: any bytes that decode as a reflection request get an answer that
/// carries the request, and is a list, files that decode as descriptors, an empty extension
/// list, or NOT_FOUND / INVALID_ARGUMENT; a stream never sends a file twice unasked.
pub fn reflection(data: &[u8]) {
    use prost::Message;
    use sdsim_net::grpc::pb::reflection_v1::server_reflection_response::MessageResponse;
    use sdsim_net::grpc::pb::reflection_v1::ServerReflectionRequest;
    use sdsim_net::grpc::reflection::Reflection;
    let Ok(request) = ServerReflectionRequest::decode(data) else {
        return;
    };
    thread_local! {
        static INDEX: Reflection = Reflection::new(&[
            sdsim_net::grpc::FILE_DESCRIPTOR_SET,
            sdsim_auth::FILE_DESCRIPTOR_SET,
            sdsim_projects::FILE_DESCRIPTOR_SET,
            sdsim_simulations::FILE_DESCRIPTOR_SET,
        ])
        .expect("the built-in descriptor sets index");
    }
    INDEX.with(|index| {
        let mut sent = std::collections::HashSet::new();
        for _ in 0..2 {
            let answer = index.answer(request.clone(), &mut sent);
            assert_eq!(answer.original_request.as_ref(), Some(&request));
            assert_eq!(answer.valid_host, request.host);
            match answer.message_response.expect("every request is answered") {
                MessageResponse::FileDescriptorResponse(files) => {
                    assert!(!files.file_descriptor_proto.is_empty());
                    for file in &files.file_descriptor_proto {
                        prost_types::FileDescriptorProto::decode(&file[..])
                            .expect("a served file decodes as a descriptor");
                    }
                }
                MessageResponse::ErrorResponse(e) => assert!(
                    [Code::NotFound as i32, Code::InvalidArgument as i32].contains(&e.error_code),
                    "{e:?}"
                ),
                MessageResponse::ListServicesResponse(_)
                | MessageResponse::AllExtensionNumbersResponse(_) => {}
            }
        }
    });
}
