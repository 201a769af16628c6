//! Client credentials (written by another helper; placeholder until merge).
