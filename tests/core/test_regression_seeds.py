"""Seeds of leeky_twisted.testing.simulation that once found a bug, kept so it stays fixed.

Add a seed here, with what it found, whenever a run fails; replay one with
``python -m leeky_twisted.simulation --seed SEED -v``. Bugs found by the
deterministic tests instead have their regression tests next to the rule, in
test_paper.py (marked "Regression:").
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from leeky_twisted.testing.simulation import Simulation

REGRESSIONS = {
    440869: (
        "Found by the soak of the merged node runtime (also failing on the code before it): "
        "the leader's own removal committed during the liveness phase, just after the "
        "liveness write; the check returned at once and the final check, in the election "
        "that followed, found no leader. Fixed in testing/simulation.py: the liveness "
        "phase ends only once a leader is in office (a checker fix; the cluster was live)."
    ),
    316428: (
        "Found by the seats soak: a follower stored a received snapshot and stopped before "
        "its log was cut to begin after it; at each restart its next append left a gap and it "
        "stopped itself again, for ever. Fixed in server/node.py (_recover): a log that ends "
        "below the newest snapshot is cut to begin after it at start."
    ),
    303572: (
        "Found by the seats soak: with one seat vacant (its storage replaced twice), the "
        "leader removed two voters, then a third, leaving a configuration of two voters whose "
        "majority needed the vacant seat: nothing could ever commit again, not even the seat's "
        "binding. Fixed in core/raft.py (propose_config_change): a change is refused when the "
        "voters heard from lately and counted by their seats would not make a majority of the "
        "new configuration (etcd's strict reconfiguration check)."
    ),
    20675: (
        "Four voters, one wiped; the node with the most complete log had appended its own "
        "removal (uncommitted), so it neither campaigned nor granted the others, whose grants "
        "made a majority only with the wiped voter's: no leader ever again. Fixed in "
        "core/raft.py (_may_campaign): a node whose removal is the latest, uncommitted "
        "configuration entry stands for election, counted by the new configuration's voters "
        "only; it commits its removal and steps down."
    ),
    92: (
        "5 nodes, partitions, crashes, membership changes and compaction: InstallSnapshot "
        "messages were lost (dropped by a partition, or superseded by a newer snapshot before "
        "sending) and the leader never sent them again. Two followers stayed in snapshot state "
        "forever and the 4-voter configuration could never commit after healing. Fixed in "
        "core/raft.py + progress.py: resend after snapshot_retry_ticks without an answer."
    ),
    43: (
        "Found once the simulation drove the shipped RaftNode: a leader lost leadership "
        "with a write pending at index i, won again and took a new write at the same "
        "index; the first request was overwritten in the node's table and never "
        "answered. Fixed in node.py (_wait_for): the older request is told its entry "
        "was replaced."
    ),
    1182: (
        "Found by the 20,000-seed soak: a voter whose disk was wiped abstains from votes, "
        "but answered a pre-vote with the candidate's next term, which ended the "
        "candidate's pre-candidacy every time; with the wiped voter's vote never needed, "
        "the two healthy voters still never elected a leader. Fixed in core/raft.py: an "
        "abstaining node refuses with its own term, as any refusal does."
    ),
    12314: (
        "Found by the soak: a node restarted with its newest snapshot corrupt and its log "
        "compacted through that snapshot (so empty); recovery checked the log's start "
        "against the older snapshot only when the log held entries, so it started from "
        "the older snapshot, forgot four acknowledged entries, and voted for a leader "
        "without a committed write. Fixed in node.py (_recover): a log that starts past "
        "the newest readable snapshot is refused, empty or not."
    ),
    13434: (
        "Found by the soak: a wiped voter, still abstaining, had caught up part of the "
        "log (a snapshot and some entries) and campaigned; its vote for itself plus a "
        "laggard's made it leader without a committed entry. Fixed in core/raft.py "
        "(_campaign): a node that abstains does not campaign either, unless its log "
        "holds only the bootstrap entries (a brand-new cluster). Since replaced by the "
        "rule that a grant from an abstainer needs one grant more (core/quorum.py), "
        "which refuses this election too."
    ),
    12273: (
        "Found by the soak: a single-voter cluster; the leader's process died between "
        "appending its first entry of term 2 and saving its hard state (term 2, no longer "
        "abstaining). It came back at term 1 with a term-2 entry and still abstaining, so "
        "it could never campaign again. Fixed in node.py (_write): the hard state is saved "
        "before the entries (the saved term is never below a stored entry's), and a new "
        "leader's end of abstention with it."
    ),
    3300: (
        "Found by the soak, a fault of the checker, not the node: a candidate of term 5 "
        "whose reactor stalled counted its votes and became leader after a leader of term "
        "6 had committed an entry it lacked. Leader Completeness binds leaders of later "
        "terms only; the simulation now records the term in which each entry was first "
        "seen committed and checks a new leader against entries of earlier terms."
    ),
}

#: Found by the 20,000-seed soak when an abstaining voter refused every candidate whose log
#: went past the bootstrap entries (and could not campaign itself): safe, but no leader was
#: ever elected again once a majority of voters abstained (a crash between the write of the
#: entries that ended a node's abstention and the write recording its end; nodes caught up
#: from an early snapshot only; two voters that never heard from a leader since bootstrap)
#: though the node that could bring them up to date was back. Fixed by storage identities
#: and counting abstainers' votes (core/quorum.py, vote_result): an abstaining voter grants
#: like any other and says it abstains; a candidate needs one grant more when one of its
#: grants comes from an abstainer, which keeps safety with one lost storage at a time.
REGRESSIONS[166] = (
    "Found while counting abstainers' votes: 4 voters; the leader appended the removal of "
    "n3 (in force on append) and committed it with one other voter; its disk was then "
    "lost. n3, lacking the removal, won with its own grant, the laggard's and the wiped "
    "node's: three of four, two honest ones, which overlap every majority of four but not "
    "the majority of three that committed the removal. Fixed in core/quorum.py: the honest "
    "grants alone must be a majority."
)
REGRESSIONS[349] = "the same as 166, with a NORMAL entry committed under the new configuration"
REGRESSIONS[364] = (
    "Found once abstainers' grants needed one grant more: a follower, caught up from a "
    "snapshot, crashed between the snapshot's write and the hard state ending its "
    "abstention; it came back abstaining in a two-voter configuration, so the other voter "
    "could never win again. Fixed in node.py (_write) and core/raft.py: the hard state "
    "written before the entries names the entry that ends the abstention (caught_up); on "
    "restart, holding it ends the abstention."
)
REGRESSIONS[2652] = (
    "Found by the soak: a cluster bootstrapped as one voter promoted a learner that had "
    "ended its abstention in memory only; it crashed before that reached the disk, came "
    "back abstaining, and the two-voter configuration could never elect again. Fixed in "
    "core/raft.py: a learner is promoted only once its heartbeat answer says it no longer "
    "abstains."
)
for _seed in (2838, 4230, 6747, 8470, 9380, 11759, 12150, 12302, 17682, 20190):
    REGRESSIONS[_seed] = "an abstaining majority never elected a leader again (see above)"


#: Seeds found once half the seeds read in batches (Simulation.batch_reads); every other
#: seed here was found with one read per message, and runs so (as it ran when found).
REGRESSIONS[900101] = (
    "Found by the first soak with batched reads, a fault of the checker: n1's reactor "
    "stalled until past the heal and its folder was deleted meanwhile; the heal lifted the "
    "stall but not the calls it had postponed (the folder check among them), and the check "
    "wanted n1 stopped one interval after the deletion. It now waits for those calls "
    "(NodeClock.waking) too, as it waits for a stall's end."
)
REGRESSIONS[545902] = (
    "The same fault of the checker as 900101, found by the soak with one read per message: "
    "n3's reactor stalled until past the heal, and its data folder was deleted during the "
    "stall."
)
BATCHED_READS = {900101}


@pytest.mark.parametrize("seed", sorted(REGRESSIONS))
def test_seed_that_once_found_a_bug_now_passes(seed):
    """The seed runs clean: safety held at every step and the cluster recovered."""
    batch_reads = None if seed in BATCHED_READS else False
    result = Simulation(seed, ticks=300, batch_reads=batch_reads).run()
    assert result.committed > 0


REPLAY = (
    "from leeky_twisted.testing.simulation import Simulation\n"
    "print(Simulation(92, ticks=300).run())\n"
)


def test_replay_does_not_depend_on_string_hash_randomization():
    """Regression: a seed replays identically whatever PYTHONHASHSEED is."""
    # The leader built its per-follower table by iterating a frozenset of node ids, whose
    # order changes with PYTHONHASHSEED, so message order (and whether seed 92 failed)
    # differed between processes. Fixed by sorting the ids (core/raft.py, _sync_progress).
    outputs = set()
    for hash_seed in ("1", "2", "3"):
        proc = subprocess.run(
            [sys.executable, "-c", REPLAY],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed},
        )
        outputs.add(proc.stdout)
    assert len(outputs) == 1
