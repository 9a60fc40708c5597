"""RAFT stage 1: self-conditioned rewriting, semantic filtering and answer fusion."""
