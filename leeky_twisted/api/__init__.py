"""api layer of Leeky Raft."""
