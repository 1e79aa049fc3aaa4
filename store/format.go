package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// storeFormat is the store format this build applies. Every replica of a
// shard must apply every entry alike, and a replica of an older build
// would silently apply differently an entry that uses something it does
// not know (an unknown field is dropped by protobuf, an unknown op or
// command is refused): its state would drift from the others' with no
// error anywhere. So an entry that needs a newer replica says so in
// StoreCommand.min_format, and a replica whose format is lower stops
// applying at that entry (it halts) rather than diverge.
//
// When an op changes meaning, raise storeFormat and have EncodeBatch set
// min_format on the entries that use the new meaning. Format 1 is this
// build; nothing it proposes needs more than format 0, so entries carry no
// min_format yet.
const storeFormat = 1

// keyFormatSeen holds the highest min_format of the entries applied here
// (absent: 0). Data holding it cannot be opened by a build of a lower
// format (a downgrade), nor restored into one from a snapshot.
var keyFormatSeen = []byte{tagMeta, 'f', 'o', 'r', 'm', 'a', 't'}

// ErrHalted means the replica stopped applying entries: it met one that
// needs a newer build (a *FormatError says which and why). Upgrading the
// binary and restarting the replica resumes from that entry.
var ErrHalted = errors.New("store: replica halted")

// FormatError is data or an entry that needs a newer store format than
// this replica's.
type FormatError struct {
	What       string // "entry 9", "data in DIR", "a snapshot taken at index 9"
	Need, Have uint32
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("%s needs store format %d and this build applies up to %d; run this replica on a seqd build of that format or newer",
		e.What, e.Need, e.Have)
}

// haltedErr is what a halted replica answers every call.
func haltedErr(err error) error {
	return status.Errorf(codes.Unavailable, "%v; retry at another replica", err)
}

// readFormatSeen reads keyFormatSeen.
func readFormatSeen(db *badger.DB) (uint32, error) {
	v, err := readMeta(db, keyFormatSeen, 4)
	if err != nil || v == nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(v), nil
}

// checkFormatSeen refuses data that entries of a newer format have changed.
func checkFormatSeen(db *badger.DB, format uint32, what string) (uint32, error) {
	seen, err := readFormatSeen(db)
	if err != nil {
		return 0, err
	}
	if seen > format {
		return seen, &FormatError{What: what, Need: seen, Have: format}
	}
	return seen, nil
}

// halt stops this replica applying entries, once; later entries get the
// same error and leave the state alone. It tells onHalt, which stops the
// replica's Raft node.
func (f *FSM) halt(cause *FormatError) error {
	err := fmt.Errorf("%w: %w", ErrHalted, cause)
	if f.halted.CompareAndSwap(nil, &err) {
		f.log.Error("store replica halted; it applies nothing more until upgraded and restarted", "err", err,
			"applied", f.applied.Load())
		if f.onHalt != nil {
			f.onHalt(err)
		}
	}
	return *f.halted.Load()
}

// Halted returns why the replica halted, or nil.
func (f *FSM) Halted() error {
	if p := f.halted.Load(); p != nil {
		return *p
	}
	return nil
}
