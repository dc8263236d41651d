"""Running and measuring clusters on one machine: localcluster, localcontrol, bench."""
