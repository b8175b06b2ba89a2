//! Bidirectional streaming: the handler reads the client's messages as they arrive and answers
//! on the same call while the client is still sending (server reflection is such a method:
//! `grpcurl` sends a request, waits for its answer, then sends the next).

use super::frame;
use super::server::{Responses, Stream};
use super::status::{Code, Status};
use bytes::BytesMut;
use h2::RecvStream;
use std::marker::PhantomData;

/// The messages a client sends on a bidirectional call, decoded one at a time. A message is
/// refused (RESOURCE_EXHAUSTED) as soon as its length prefix says it is over the limit, before
/// its bytes are buffered.
pub struct Requests<T> {
    body: RecvStream,
    buf: BytesMut,
    max: usize,
    gzip: bool,
    _type: PhantomData<T>,
}

impl<T: prost::Message + Default> Requests<T> {
    pub(super) fn new(body: RecvStream, max: usize, gzip: bool) -> Requests<T> {
        Requests {
            body,
            buf: BytesMut::new(),
            max,
            gzip,
            _type: PhantomData,
        }
    }

    /// The next message; `None` once the client has closed its side with nothing left over.
    pub async fn next(&mut self) -> Result<Option<T>, Status> {
        loop {
            if let Some(message) = frame::decode(&mut self.buf, self.max, self.gzip)? {
                return T::decode(message).map(Some).map_err(|e| {
                    Status::new(
                        Code::InvalidArgument,
                        format!("a request message does not decode: {e}"),
                    )
                });
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| {
                        Status::new(Code::Cancelled, format!("request stream failed: {e}"))
                    })?;
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(Status::new(
                        Code::Internal,
                        "the request stream ended inside a message",
                    ))
                }
            }
        }
    }
}

/// The handler of a bidirectional method, type-erased.
pub(super) type Bidi = std::rc::Rc<
    dyn Fn(
        super::Call,
        RecvStream,
        usize,
        bool,
        Responses,
    ) -> futures_util::future::LocalBoxFuture<'static, Result<(), Status>>,
>;

/// Wraps a typed handler.
pub(super) fn erase<Req, Resp, F, Fut>(f: F) -> Bidi
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
    F: Fn(super::Call, Requests<Req>, Stream<Resp>) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<(), Status>> + 'static,
{
    let f = std::rc::Rc::new(f);
    std::rc::Rc::new(move |call, body, max, gzip, out| {
        let f = std::rc::Rc::clone(&f);
        Box::pin(async move { f(call, Requests::new(body, max, gzip), Stream::new(out)).await })
    })
}
