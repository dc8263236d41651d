"""membership layer of Leeky Raft."""
