//! gRPC server reflection, v1 and v1alpha (`grpc.reflection.*.ServerReflection`): a client
//! asks which services a listener answers and for the descriptors of their files, so `grpcurl`,
//! Postman and grpcio-reflection call sdsim without its `.proto` files.
//!
//! The answers come from the descriptor sets the crates' build scripts encode from `proto/`
//! (the same ones the message types are generated from), so they cannot drift from the code.
//! A listener lists only the services it has methods for; a file is served whole, with the
//! files it imports that the stream has not sent yet, as the protocol asks.

use super::bidi::Requests;
use super::pb::reflection_v1::server_reflection_request::MessageRequest;
use super::pb::reflection_v1::server_reflection_response::MessageResponse;
use super::pb::reflection_v1::{
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};
use super::server::{Call, Services, Stream};
use super::status::{Code, Status};
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// The method of both versions (their messages are the same on the wire).
const PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Why descriptors could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    /// A descriptor set does not decode.
    #[error("a file descriptor set does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Two sets define the same file differently.
    #[error("two descriptor sets define {0} differently")]
    Conflict(String),
}

/// What a listener's reflection service knows: files by name, and which file defines each
/// symbol.
pub struct Reflection {
    files: HashMap<String, Rc<FileDescriptorProto>>,
    symbols: HashMap<String, String>,
    messages: HashSet<String>,
    services: Vec<String>,
}

impl Reflection {
    /// Indexes the encoded `FileDescriptorSet`s in `sets` (a file in several sets must be
    /// identical in each).
    pub fn new(sets: &[&[u8]]) -> Result<Reflection, ReflectionError> {
        let mut files: HashMap<String, Rc<FileDescriptorProto>> = HashMap::new();
        for set in sets {
            for file in FileDescriptorSet::decode(*set)?.file {
                let name = file.name().to_string();
                match files.get(&name) {
                    Some(known) if **known != file => return Err(ReflectionError::Conflict(name)),
                    Some(_) => {}
                    None => {
                        files.insert(name, Rc::new(file));
                    }
                }
            }
        }
        let mut symbols = HashMap::new();
        let mut messages = HashSet::new();
        for (name, file) in &files {
            let package = file.package();
            let qualify = |s: &str| {
                if package.is_empty() {
                    s.to_string()
                } else {
                    format!("{package}.{s}")
                }
            };
            for service in &file.service {
                let full = qualify(service.name());
                for method in &service.method {
                    symbols.insert(format!("{full}.{}", method.name()), name.clone());
                }
                symbols.insert(full, name.clone());
            }
            for e in &file.enum_type {
                symbols.insert(qualify(e.name()), name.clone());
            }
            for m in &file.message_type {
                index_message(&qualify(m.name()), m, name, &mut symbols, &mut messages);
            }
        }
        Ok(Reflection {
            files,
            symbols,
            messages,
            services: Vec::new(),
        })
    }

    /// Registers reflection on `services`, listing the services registered there so far and
    /// reflection itself: call it after every other service of the listener.
    pub fn register(mut self, services: &mut Services) {
        let mut names = services.service_names();
        names.extend(
            PATHS
                .iter()
                .filter_map(|p| Some(p.strip_prefix('/')?.split_once('/')?.0.to_string())),
        );
        names.sort();
        names.dedup();
        self.services = names;
        let this = Rc::new(self);
        for path in PATHS {
            let this = Rc::clone(&this);
            services.bidi_streaming(
                path,
                move |_call: Call,
                      mut requests: Requests<ServerReflectionRequest>,
                      mut out: Stream<ServerReflectionResponse>| {
                    let this = Rc::clone(&this);
                    async move {
                        // Files already sent on this stream are not sent again.
                        let mut sent = HashSet::new();
                        while let Some(request) = requests.next().await? {
                            out.send(&this.answer(request, &mut sent)).await?;
                        }
                        Ok::<_, Status>(())
                    }
                },
            );
        }
    }

    /// The services this listener answers, fully qualified and sorted.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// The answer to one request; `sent` holds the files this stream has sent.
    pub fn answer(
        &self,
        request: ServerReflectionRequest,
        sent: &mut HashSet<String>,
    ) -> ServerReflectionResponse {
        let reply = match &request.message_request {
            Some(MessageRequest::ListServices(_)) => {
                Ok(MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                }))
            }
            Some(MessageRequest::FileByFilename(name)) => self.file(name, sent),
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                let symbol = symbol.strip_prefix('.').unwrap_or(symbol);
                match self.symbols.get(symbol) {
                    Some(file) => self.file(file, sent),
                    None => Err(not_found(format!("symbol {symbol} is not defined here"))),
                }
            }
            Some(MessageRequest::FileContainingExtension(e)) => Err(not_found(format!(
                "no extension {} of {} is defined here",
                e.extension_number, e.containing_type
            ))),
            Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
                let name = name.strip_prefix('.').unwrap_or(name);
                if self.messages.contains(name) {
                    Ok(MessageResponse::AllExtensionNumbersResponse(
                        ExtensionNumberResponse {
                            base_type_name: name.to_string(),
                            extension_number: Vec::new(),
                        },
                    ))
                } else {
                    Err(not_found(format!("message type {name} is not defined here")))
                }
            }
            None => Err(Status::new(
                Code::InvalidArgument,
                "message_request: one of list_services, file_by_filename, file_containing_symbol, file_containing_extension or all_extension_numbers_of_type is required",
            )),
        };
        let message_response = reply.unwrap_or_else(|status| {
            MessageResponse::ErrorResponse(ErrorResponse {
                error_code: status.code as i32,
                error_message: status.message.clone(),
            })
        });
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message_response),
        }
    }

    /// `name` and the files it imports, transitively, minus those `sent` already.
    fn file(&self, name: &str, sent: &mut HashSet<String>) -> Result<MessageResponse, Status> {
        if !self.files.contains_key(name) {
            return Err(not_found(format!("file {name} is not known here")));
        }
        let mut encoded = Vec::new();
        let mut next = vec![name.to_string()];
        // The file asked for goes first, even when this stream sent it before.
        sent.remove(name);
        while let Some(name) = next.pop() {
            if !sent.insert(name.clone()) {
                continue;
            }
            let file = self
                .files
                .get(&name)
                .ok_or_else(|| not_found(format!("file {name} (an import) is not known here")))?;
            encoded.push(file.encode_to_vec());
            next.extend(file.dependency.iter().rev().cloned());
        }
        Ok(MessageResponse::FileDescriptorResponse(
            FileDescriptorResponse {
                file_descriptor_proto: encoded,
            },
        ))
    }
}

fn not_found(message: String) -> Status {
    Status::new(Code::NotFound, message)
}

/// Indexes a message, its nested messages and enums under `full` (its qualified name).
fn index_message(
    full: &str,
    message: &DescriptorProto,
    file: &str,
    symbols: &mut HashMap<String, String>,
    messages: &mut HashSet<String>,
) {
    symbols.insert(full.to_string(), file.to_string());
    messages.insert(full.to_string());
    for e in &message.enum_type {
        symbols.insert(format!("{full}.{}", e.name()), file.to_string());
    }
    for nested in &message.nested_type {
        let name = format!("{full}.{}", nested.name());
        index_message(&name, nested, file, symbols, messages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(message: MessageRequest) -> ServerReflectionRequest {
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        }
    }

    fn files(answer: ServerReflectionResponse) -> Vec<String> {
        match answer.message_response {
            Some(MessageResponse::FileDescriptorResponse(f)) => f
                .file_descriptor_proto
                .iter()
                .map(|b| {
                    FileDescriptorProto::decode(&b[..])
                        .unwrap()
                        .name()
                        .to_string()
                })
                .collect(),
            other => panic!("not files: {other:?}"),
        }
    }

    fn error(answer: ServerReflectionResponse) -> (i32, String) {
        match answer.message_response {
            Some(MessageResponse::ErrorResponse(e)) => (e.error_code, e.error_message),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn symbols_of_every_kind_resolve_to_their_file() {
        let index = Reflection::new(&[crate::grpc::FILE_DESCRIPTOR_SET]).unwrap();
        let health = "grpc/health/v1/health.proto";
        for symbol in [
            "grpc.health.v1.Health",
            "grpc.health.v1.Health.Watch",
            ".grpc.health.v1.HealthCheckRequest",
            // A nested enum.
            "grpc.health.v1.HealthCheckResponse.ServingStatus",
        ] {
            let answer = index.answer(
                request(MessageRequest::FileContainingSymbol(symbol.into())),
                &mut HashSet::new(),
            );
            assert_eq!(files(answer), [health], "{symbol}");
        }
        let (code, message) = error(index.answer(
            request(MessageRequest::FileContainingSymbol(
                "grpc.health.v1.Nope".into(),
            )),
            &mut HashSet::new(),
        ));
        assert_eq!(code, Code::NotFound as i32);
        assert!(message.contains("grpc.health.v1.Nope"), "{message}");
    }

    #[test]
    fn a_request_without_a_question_is_invalid_and_extensions_are_none() {
        let index = Reflection::new(&[crate::grpc::FILE_DESCRIPTOR_SET]).unwrap();
        let empty = ServerReflectionRequest {
            host: "h".into(),
            message_request: None,
        };
        let answer = index.answer(empty.clone(), &mut HashSet::new());
        assert_eq!(answer.original_request, Some(empty));
        let (code, message) = error(answer);
        assert_eq!(code, Code::InvalidArgument as i32);
        assert!(message.starts_with("message_request"), "{message}");
        let known = index.answer(
            request(MessageRequest::AllExtensionNumbersOfType(
                "grpc.health.v1.HealthCheckRequest".into(),
            )),
            &mut HashSet::new(),
        );
        assert!(matches!(
            known.message_response,
            Some(MessageResponse::AllExtensionNumbersResponse(ref r)) if r.extension_number.is_empty()
        ));
    }

    #[test]
    fn two_sets_that_define_one_file_differently_are_refused() {
        let mut set = FileDescriptorSet::decode(crate::grpc::FILE_DESCRIPTOR_SET).unwrap();
        set.file[0].package = Some("changed".into());
        let changed = set.encode_to_vec();
        let refused = Reflection::new(&[crate::grpc::FILE_DESCRIPTOR_SET, &changed]);
        assert!(matches!(refused, Err(ReflectionError::Conflict(_))));
        // The same set twice is the same files.
        let same = crate::grpc::FILE_DESCRIPTOR_SET;
        assert!(Reflection::new(&[same, same]).is_ok());
    }
}
