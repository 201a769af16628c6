//! `quill-interop`: the interop scenario runner; see [`quill_interop::runner`].

fn main() {
    std::process::exit(quill_interop::runner::main());
}
