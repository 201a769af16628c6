//! Client known_hosts file (written by another helper; placeholder until merge).
