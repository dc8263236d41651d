"""storage layer of Leeky Raft."""
