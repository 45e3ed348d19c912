//! Privileged test helpers (namespaces, veths, pin directories, packets).
