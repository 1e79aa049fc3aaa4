package jepsen

import (
	"fmt"
	"sort"
	"time"

	"github.com/seqd/seqd/internal/bugs"
)

// Scenario is a named run: a workload, a nemesis mix, optionally a planted
// bug, and the outcome it must have.
type Scenario struct {
	Name     string
	Doc      string
	Workload string
	Nemesis  string
	Bug      string
	// NeedsNetns: the faults that matter need partitions.
	NeedsNetns bool
	TimeLimit  time.Duration
	// Interval overrides the default time between faults.
	Interval [2]time.Duration
	// Hold overrides how long each fault lasts.
	Hold [2]time.Duration
	// Step overrides the max_seq step (default 1000), unless --step is given.
	Step uint64
	// StoreShards overrides the number of store shards (default 1),
	// unless --store-shards is given.
	StoreShards int
	// Retention sets the store's inbox retention (default off), unless
	// --retention is given.
	Retention time.Duration
	// Expect is "pass" (no anomaly allowed) or "fail" (the run must catch
	// the anomaly: a planted bug, or clock skew beyond the margin).
	Expect string
}

// bugInterval packs faults closer, so a 60 s run sees a dozen of them.
var bugInterval = [2]time.Duration{2 * time.Second, 6 * time.Second}

// Acknowledging before the commit shows in a window of a few milliseconds
// around each fault (the entries in flight when the leader goes away), so
// its scenario uses many short faults: about twenty in 60 s.
var (
	storeBugInterval = [2]time.Duration{1 * time.Second, 2 * time.Second}
	storeBugHold     = [2]time.Duration{1 * time.Second, 2 * time.Second}
)

// The scenarios. Each planted bug has one named after it that must catch it
// (exit code 1); the others must pass.
var scenarios = []Scenario{
	{Name: "smoke", Doc: "CI smoke run: alloc and messages (on two store shards) under kill, pause and partition (partition skipped on the local backend)",
		Workload: "all", Nemesis: "kill,pause,partition", StoreShards: 2, TimeLimit: 60 * time.Second, Expect: "pass"},
	{Name: "mixed", Doc: "every nemesis, clock skew within the lease margin included",
		Workload: "alloc", Nemesis: "kill,pause,partition,clock", TimeLimit: 60 * time.Second, Expect: "pass"},
	{Name: "lease-cut", Doc: "the lease case: an AllocSvr cut off from the arbiters but still reachable by clients, plus AllocSvr pauses",
		Workload: "alloc", Nemesis: "partition:allocsvr-arbiters,pause:allocsvr", NeedsNetns: true, TimeLimit: 60 * time.Second, Expect: "pass"},
	{Name: "clock-within", Doc: "one lease clock at most 5% off (the margin is lease/10) while AllocSvrs are cut off, paused and killed: must stay safe",
		Workload: "alloc", Nemesis: "clock,partition:allocsvr-arbiters,pause:allocsvr,kill:allocsvr", NeedsNetns: true, TimeLimit: 60 * time.Second, Expect: "pass"},
	{Name: "clock-beyond", Doc: "the arbiter leader's lease clock at 2x while AllocSvrs are cut off: past the margin, an old and a new owner serve at once; shows what the margin protects",
		Workload: "alloc", Nemesis: "clock-beyond:leader,partition:allocsvr-arbiters", NeedsNetns: true, TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "fail"},
	{Name: bugs.ServeMovedSectionEarly, Doc: "planted bug: slots move after half a lease; AllocSvrs cut off from the arbiters or paused briefly keep serving what moved",
		Workload: "alloc", Nemesis: "partition:allocsvr-arbiters,pause:allocsvr", Bug: bugs.ServeMovedSectionEarly, TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "fail"},
	{Name: bugs.AckBeforeRaiseCommit, Doc: "planted bug: numbers above max_seq before the raise commits; an AllocSvr cut off from the arbiters, or killed, loses them and its successor repeats them",
		Workload: "alloc", Nemesis: "partition:allocsvr-arbiters,kill:allocsvr", Bug: bugs.AckBeforeRaiseCommit, TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "fail",
		// A short step: hot keys run out of committed room within a
		// fraction of a cut-off AllocSvr's lease, so it has to answer from
		// raises that never commit.
		Step: 200},
	{Name: "messages", Doc: "the message store under kill, pause and partition of every role, store leader included",
		Workload: "messages", Nemesis: "kill,pause,partition", TimeLimit: 60 * time.Second, Expect: "pass"},
	{Name: "messages-store", Doc: "the store leader killed, paused and isolated over and over while sends, streams and read markers run",
		Workload: "messages", Nemesis: "kill:store-leader+store,pause:store-leader,partition:isolate-store-leader", TimeLimit: 60 * time.Second, Expect: "pass"},
	{Name: "messages-shards", Doc: "two store shards, with sends and group hints crossing between them: each shard's leader killed, paused and isolated, and the shards cut off from each other while deliveries wait in their outboxes",
		Workload: "messages", Nemesis: "kill:store-leader+store,pause:store-leader,partition:store-shards+isolate-store-leader", StoreShards: 2,
		TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "pass"},
	{Name: "messages-retention", Doc: "the message store removing inbox events and group timeline entries older than 30 s while the run goes on, on two store shards, under kills, pauses and partitions: nothing acknowledged is lost or doubled before its time, streams stay gap-free but for what was removed, and once everything is due nothing is left and unread counts agree",
		Workload: "messages", Nemesis: "kill,pause,partition", StoreShards: 2, Retention: 30 * time.Second, TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "pass"},
	{Name: bugs.ExpireTooEarly, Doc: "planted bug: retention removes events older than half its period; messages-retention's run must find acknowledged sends missing that were not yet due",
		Workload: "messages", Nemesis: "kill,pause,partition", Bug: bugs.ExpireTooEarly, StoreShards: 2, Retention: 30 * time.Second, Interval: bugInterval,
		TimeLimit: 60 * time.Second, Expect: "fail"},
	{Name: bugs.ExpireKeepsUnread, Doc: "planted bug: retention removes unread messages but not from the unread counts; once everything is due, counts stay above what the empty inboxes imply",
		Workload: "messages", Nemesis: "kill,pause,partition", Bug: bugs.ExpireKeepsUnread, StoreShards: 2, Retention: 30 * time.Second, Interval: bugInterval,
		TimeLimit: 60 * time.Second, Expect: "fail"},
	{Name: bugs.RedeliverWithoutDedup, Doc: "planted bug: deliveries from another shard not deduplicated; the faults of messages-shards make the sender's shard retry deliveries that were applied",
		Workload: "messages", Nemesis: "kill:store-leader+store,pause:store-leader,partition:store-shards+isolate-store-leader", Bug: bugs.RedeliverWithoutDedup, StoreShards: 2,
		TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "fail"},
	{Name: bugs.AckSendBeforeCommit, Doc: "planted bug: sends acknowledged on proposal; a store leader cut off from its followers (still reaching the allocator) or killed loses what it acknowledged",
		Workload: "messages", Nemesis: "partition:store-leader-followers+isolate-store-leader,kill:store-leader", Bug: bugs.AckSendBeforeCommit, NeedsNetns: true,
		TimeLimit: 60 * time.Second, Interval: storeBugInterval, Hold: storeBugHold, Expect: "fail"},
	{Name: bugs.SkipClientMsgIDDedup, Doc: "planted bug: retries not deduplicated; pauses, kills and isolation of the store leader make clients retry sends that committed",
		// A kill loses the answers to entries that committed in the same
		// instant; an isolation alone commits nothing a retry could double
		// (seed 44 drew only isolations and passed).
		Workload: "messages", Nemesis: "pause:store-leader,partition:isolate-store-leader,kill:store-leader", Bug: bugs.SkipClientMsgIDDedup,
		TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "fail"},
	{Name: bugs.UnreadOutsideBatch, Doc: "planted bug: unread counters written apart from their events; replicas killed in between keep counts that disagree with their inboxes",
		Workload: "messages", Nemesis: "kill:store", Bug: bugs.UnreadOutsideBatch, TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "fail"},
	{Name: "upgrade", Doc: "a rolling upgrade of two store shards to a build one store format newer (in which MarkRead is an op of that format), with store replicas killed and paused meanwhile: no replica halts, MarkRead waits for each shard's last replica and works after",
		// Followers are upgraded and one replica of each shard stays on
		// the older build until the final heal, so leader kills and
		// pauses put either build in the lead while the shards are
		// mixed, and deliveries cross between shards at different stages
		// of the upgrade: the planted bug's faults and schedule, plus
		// pauses and a second shard, without the bug.
		Workload: "messages", Nemesis: "upgrade:store-follower,kill:store-leader,pause:store-leader", StoreShards: 2, TimeLimit: 60 * time.Second,
		Interval: storeBugInterval, Hold: storeBugHold, Expect: "pass"},
	{Name: bugs.ProposeNewerFormatEarly, Doc: "planted bug: a store leader on the newer build proposes MarkRead, an op of its newer format, while replicas of the older build still apply entries; they halt",
		// Followers are upgraded and one replica stays on the older
		// build until the final heal; leader kills then put a newer
		// replica in the lead while an older one applies entries.
		Workload: "messages", Nemesis: "upgrade:store-follower,kill:store-leader", Bug: bugs.ProposeNewerFormatEarly,
		TimeLimit: 60 * time.Second, Interval: storeBugInterval, Hold: storeBugHold, Expect: "fail"},
	{Name: bugs.AcceptStaleRoutingTable, Doc: "planted bug: clients take older tables and an AllocSvr whose lease lapsed keeps serving its last table; an AllocSvr cut off from the arbiters serves what moved",
		Workload: "alloc", Nemesis: "partition:allocsvr-arbiters", Bug: bugs.AcceptStaleRoutingTable, NeedsNetns: true, TimeLimit: 60 * time.Second, Interval: bugInterval, Expect: "fail"},
}

// Scenarios lists the named scenarios, sorted by name.
func Scenarios() []Scenario {
	out := append([]Scenario(nil), scenarios...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupScenario returns the scenario called name.
func LookupScenario(name string) (Scenario, error) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	return Scenario{}, fmt.Errorf("unknown scenario %q; `seqjepsen scenarios` lists them", name)
}

// ScenarioForBug returns the scenario that must catch bug.
func ScenarioForBug(bug string) (Scenario, bool) {
	for _, s := range scenarios {
		if s.Bug == bug {
			return s, true
		}
	}
	return Scenario{}, false
}
