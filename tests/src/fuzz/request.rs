//! Target `request`: bytes on the socket → frames (a small line limit, so
//! the over-long path runs too) → each line decoded the way the daemon
//! decodes it ([`filter::api::call`]) → the parameters' own parsing (an
//! `explain` packet, the `flows` and `monitor` filters, an `apply`
//! document). Every step answers or refuses; none panics.
use filter::{
    api::{
        call::{parse_request, Call},
        frame::{read_frame, Frame},
        ErrorCode, Method,
    },
    flowlog::{FlowFilter, MonitorFilter},
    validate::load,
};
use tokio::io::BufReader;

/// The line limit here: small, so that fuzz inputs cross it.
const MAX_LINE: usize = 4096;

pub fn request(data: &[u8]) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    runtime.block_on(async {
        // A tiny buffer, so that lines span many reads.
        let mut reader = BufReader::with_capacity(7, data);
        let mut buf = Vec::new();
        loop {
            match read_frame(&mut reader, MAX_LINE, &mut buf).await {
                Ok(Frame::Line) => {
                    assert!(buf.len() <= MAX_LINE, "a line over the limit was kept");
                    decode(&buf);
                }
                Ok(Frame::TooLarge { len }) => assert!(len > MAX_LINE),
                Ok(Frame::Eof) => return,
                Err(e) => panic!("reading from memory failed: {e}"),
            }
        }
    });
}

fn decode(line: &[u8]) {
    let request = match parse_request(line) {
        Ok(request) => request,
        Err((_, error)) => {
            assert_eq!(error.code, ErrorCode::BadRequest, "{error}");
            return;
        }
    };
    let Some(method) = Method::parse(&request.method) else {
        return;
    };
    match Call::decode(method, request.params) {
        Ok(Call::Apply(params)) => drop(load(&params.document)),
        Ok(Call::Explain(params)) => drop(params.packet()),
        Ok(Call::Flows(params)) => drop(FlowFilter::new(&params)),
        Ok(Call::Monitor(params)) => drop(MonitorFilter::new(&params)),
        Ok(_) => {}
        Err(e) => drop(e.to_string()),
    }
}
