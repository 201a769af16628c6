//! quill-interop: the interop suite (impairment relay and scenario runner arrive with their issue).
#![warn(missing_docs)]
