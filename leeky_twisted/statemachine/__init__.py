"""statemachine layer of Leeky Raft."""
