//! `quill-interop-peer`: the quill interop peer (server or client); see
//! [`quill_interop::peer`].

fn main() {
    quill_interop::peer::main();
}
