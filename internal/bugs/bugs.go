// Package bugs plants known faults in seqd for the chaos harness to find.
//
// Release builds cannot contain them: without the seqdbugs build tag,
// Enabled is a constant false the compiler folds away, so every hook
// (`if bugs.Enabled(bugs.X) { ... }`) is dead code. With the tag, the
// SEQD_BUG environment variable (comma-separated names) picks the active
// bugs at startup, and the node's metrics listener also serves test-only
// failpoints (see RegisterHTTP).
//
// Adding a bug: add a constant and a Known entry here, then one hook line
// where the fault belongs. cmd/seqjepsen names a scenario that must catch it.
package bugs

// Names of the planted bugs.
const (
	// ServeMovedSectionEarly: the arbiter leader declares an AllocSvr's lease
	// expired after half a lease instead of lease+margin, so it hands the
	// slots to a new owner while the old one may still serve them.
	ServeMovedSectionEarly = "serve-moved-section-early"
	// AckBeforeRaiseCommit: an AllocSvr out of committed room hands out
	// numbers above max_seq while the raise is still in flight.
	AckBeforeRaiseCommit = "ack-before-raise-commit"
	// AcceptStaleRoutingTable: the router client adopts routing tables older
	// than the one it holds, and an AllocSvr keeps serving the slots of the
	// last table it was granted after its lease has lapsed.
	AcceptStaleRoutingTable = "accept-stale-routing-table"
	// AckSendBeforeCommit: the store leader acknowledges a Send as soon as
	// it has proposed the entry, before a majority committed it.
	AckSendBeforeCommit = "ack-send-before-commit"
	// SkipClientMsgIDDedup: Send ignores the (sender, client_msg_id)
	// record, so a client retry writes the message again.
	SkipClientMsgIDDedup = "skip-client-msg-id-dedup"
	// UnreadOutsideBatch: unread counters are written in a transaction of
	// their own, a moment after the events they count.
	UnreadOutsideBatch = "unread-outside-batch"
	// ProposeNewerFormatEarly: a store leader proposes ops of a newer
	// store format without waiting until every replica applies it.
	ProposeNewerFormatEarly = "propose-newer-format-early"
	// RedeliverWithoutDedup: a shard applies a delivery from another
	// shard without looking for the copy it already holds.
	RedeliverWithoutDedup = "redeliver-without-dedup"
	// ExpireTooEarly: retention removes events older than half the
	// period.
	ExpireTooEarly = "expire-too-early"
	// ExpireKeepsUnread: retention removes unread messages without
	// taking them off the unread counts.
	ExpireKeepsUnread = "expire-keeps-unread"
)

// Bug describes one planted bug.
type Bug struct {
	Name string
	// Where names the component and hook.
	Where string
	// Breaks names the guarantee from DESIGN.md section 2 it breaks.
	Breaks string
	Doc    string
}

// Known lists every planted bug, in the order reports show them.
var Known = []Bug{
	{ServeMovedSectionEarly, "arbiter/lease.go expireIfDue", "G1",
		"the arbiter reassigns an unresponsive AllocSvr's slots after lease/2 instead of lease+margin, while the old owner may still serve"},
	{AckBeforeRaiseCommit, "allocsvr/next.go nextOne", "G1",
		"the AllocSvr answers Next above max_seq before the raise of max_seq is committed"},
	{AcceptStaleRoutingTable, "router/table.go acceptTable, allocsvr/next.go nextOne", "G1",
		"clients adopt older routing tables, and an AllocSvr whose lease lapsed keeps serving the slots of its last table"},
	{AckSendBeforeCommit, "store/pipeline.go propose", "G2",
		"the store leader acknowledges Send when it proposes the entry, before a majority has committed it"},
	{SkipClientMsgIDDedup, "store/builders.go sendBuilder.plan, store/apply.go send", "G2",
		"Send ignores the (sender, client_msg_id) record, so a retried send is written twice"},
	{UnreadOutsideBatch, "store/apply.go updateConv", "G3",
		"unread counters are written in their own transaction, shortly after the events they count"},
	{ProposeNewerFormatEarly, "store/format.go formatReady", "G6",
		"a store leader of a newer build proposes ops of its store format while replicas of the older build still apply entries, which halts them"},
	{RedeliverWithoutDedup, "store/apply.go deliver", "G2",
		"a shard applies a delivery from another shard without looking for its copy key, so an outbox retry of a delivery that was applied writes the copy again"},
	{ExpireTooEarly, "store/loops.go applyRetention", "G2",
		"the store leader's retention passes remove inbox events and timeline entries older than half the period, so messages still within it go"},
	{ExpireKeepsUnread, "store/apply.go expireEvent", "G3",
		"retention removes unread messages from inboxes but leaves them in the unread counts"},
}

// Lookup returns the bug named name.
func Lookup(name string) (Bug, bool) {
	for _, b := range Known {
		if b.Name == name {
			return b, true
		}
	}
	return Bug{}, false
}

// Environment variables read by binaries built with the seqdbugs tag.
const (
	// EnvBugs selects planted bugs: comma-separated names from Known.
	EnvBugs = "SEQD_BUG"
	// EnvClockRate sets the lease clock's rate at startup (e.g. "1.03").
	EnvClockRate = "SEQD_FAILPOINT_CLOCK_RATE"
)

// ClockPath is the failpoint endpoint on the metrics listener:
// POST ClockPath?rate=1.03 sets the process's lease clock rate.
const ClockPath = "/debug/failpoint/clock"
