//go:build seqdnext

package store

// A build with the seqdnext tag plays the next store format, for upgrade
// runs of the chaos harness (seqjepsen's upgrade nemesis): its replicas
// apply format storeFormat+1, in which MarkRead is an op of that format.
// It applies every entry exactly as this build does; only the format it
// claims and the min_format of its MarkRead entries differ, which is all
// a mixed shard needs to show that a leader proposes such entries only
// once every replica can apply them, and that an older replica halts
// rather than diverge. It is never a release.
const buildFormat = storeFormat + 1

func init() {
	opFormats[mustOpField("mark_read")] = buildFormat
}
