"""core layer of Leeky Raft."""
