package arbiter

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"

	clusterv1 "github.com/seqd/seqd/proto/seqd/cluster/v1"
)

// snapshotMagic opens every arbiter snapshot, before the header record.
const snapshotMagic = "SEQDARB\n"

// snapshotFormat is the current snapshot format. Restore accepts every
// format up to it; bump it when records change meaning.
//   - 1: header and records.
//   - 2: an end record with the record count closes the snapshot.
const snapshotFormat = 2

type fsmSnapshot struct {
	records []*clusterv1.SnapshotRecord
}

// Persist writes the magic, a versioned header, then one length-prefixed
// record per piece of state. Any error cancels the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.records); err != nil {
		sink.Cancel()
		return fmt.Errorf("arbiter: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

func writeSnapshot(w io.Writer, records []*clusterv1.SnapshotRecord) error {
	bw := bufio.NewWriter(w)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	if _, err := protodelim.MarshalTo(bw, &clusterv1.SnapshotHeader{FormatVersion: snapshotFormat}); err != nil {
		return err
	}
	for _, r := range records {
		if _, err := protodelim.MarshalTo(bw, r); err != nil {
			return err
		}
	}
	end := &clusterv1.SnapshotRecord{Record: &clusterv1.SnapshotRecord_End{End: &clusterv1.SnapshotEnd{Records: uint64(len(records))}}}
	if _, err := protodelim.MarshalTo(bw, end); err != nil {
		return err
	}
	return bw.Flush()
}

func readSnapshot(r io.Reader) ([]*clusterv1.SnapshotRecord, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, errors.New("arbiter: snapshot: not an arbiter snapshot (bad magic)")
	}
	var h clusterv1.SnapshotHeader
	if err := protodelim.UnmarshalFrom(br, &h); err != nil {
		return nil, fmt.Errorf("arbiter: snapshot header: %w", err)
	}
	if h.FormatVersion == 0 || h.FormatVersion > snapshotFormat {
		return nil, fmt.Errorf("arbiter: snapshot format %d is not supported (this build reads 1..%d)", h.FormatVersion, snapshotFormat)
	}
	var out []*clusterv1.SnapshotRecord
	for {
		rec := &clusterv1.SnapshotRecord{}
		err := protodelim.UnmarshalFrom(br, rec)
		if errors.Is(err, io.EOF) {
			if h.FormatVersion >= 2 {
				return nil, fmt.Errorf("arbiter: snapshot ends after %d records without its end record: it was cut short", len(out))
			}
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("arbiter: snapshot record %d: %w", len(out), err)
		}
		if end := rec.GetEnd(); end != nil {
			if end.Records != uint64(len(out)) {
				return nil, fmt.Errorf("arbiter: snapshot holds %d records but its end record says %d", len(out), end.Records)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				return nil, errors.New("arbiter: snapshot has data after its end record")
			}
			return out, nil
		}
		out = append(out, rec)
	}
}
