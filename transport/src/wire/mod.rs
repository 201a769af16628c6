//! Pure encode/decode of quill's wire image (RFC 9000 encodings).
