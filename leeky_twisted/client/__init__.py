"""client layer of Leeky Raft."""
