package keyspace

import (
	"strings"
	"testing"
)

func TestParseMessageID(t *testing.T) {
	for _, c := range []struct {
		id       string
		key, seq uint64
	}{
		{"1.1", 1, 1},
		{DirectMessageID(42, 7), 42, 7},
		{GroupMessageID(9, 3), 9 | GroupBit, 3},
		{"18446744073709551615.18446744073709551615", 0, 0}, // sender in the group key space
	} {
		key, seq, err := ParseMessageID(c.id)
		if c.key == 0 {
			if err == nil {
				t.Errorf("%q: accepted", c.id)
			}
			continue
		}
		if err != nil || key != c.key || seq != c.seq {
			t.Errorf("%q: got %d %d %v, want %d %d", c.id, key, seq, err, c.key, c.seq)
		}
	}
	for _, bad := range []string{
		"", ".", "1", "1.", ".1", "0.1", "1.0", "g0.1", "x1.1", "1.1.1", "-1.1", "1.-1", " 1.1",
		"01.1", "1.01", "g01.1", "+1.1",
		strings.Repeat("1", 1<<20) + ".1",
	} {
		if _, _, err := ParseMessageID(bad); err == nil {
			t.Errorf("%.40q: accepted", bad)
		} else if len(err.Error()) > 200 {
			t.Errorf("%.40q: error is %d bytes long", bad, len(err.Error()))
		}
	}
}

func TestDirectConversationID(t *testing.T) {
	a := DirectConversationID(1, []uint64{2})
	if b := DirectConversationID(2, []uint64{1}); a != b {
		t.Errorf("1->2 in %d, 2->1 in %d", a, b)
	}
	if DirectConversationID(1, []uint64{2, 3}) != DirectConversationID(3, []uint64{2, 1}) {
		t.Error("group of three: the id depends on who sends")
	}
	if DirectConversationID(1, []uint64{3}) == a {
		t.Error("1-2 and 1-3 share a conversation")
	}
	for _, id := range []uint64{a, DirectConversationID(1<<62, []uint64{7})} {
		if id == 0 || id >= 1<<63 {
			t.Errorf("id %d out of 1..2^63-1", id)
		}
	}
}
