"""transport layer of Leeky Raft."""
