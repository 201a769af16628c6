//! `quill-interop`: the interop scenario runner; see [`quill_interop::runner`].

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--peers quinn,quiche` cells come from the reference-peer checks.
    let code = quill_interop::runner::main_with(&args, Some(quill_interop::reference::cells));
    std::process::exit(code);
}
