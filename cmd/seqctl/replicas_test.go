package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/testwait"
	"github.com/seqd/seqd/store"
)

// `seqctl replicas` lists every store replica with its store format, its
// applied index and its state; a replica that is down shows as
// unreachable, and the others still answer.
func TestReplicasShowsEachStoreReplica(t *testing.T) {
	c := ownClusterShards(t, 1)
	addr := c.GatewayAddr()
	ok(t, "--addr", addr, "send", "--from", "1", "--to", "2", "hi")
	var rows []replicaRow
	if err := json.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "replicas")), &rows); err != nil {
		t.Fatalf("replicas --json: %v", err)
	}
	leaders := 0
	for _, r := range rows {
		if r.Shard != "s1" || r.State != "ok" || r.Format != store.StoreFormat || (r.Leader && r.Applied == 0) {
			t.Errorf("row %+v: want shard s1, state ok, this build's format, and the leader to have applied the send", r)
		}
		if r.Leader {
			leaders++
		}
	}
	if len(rows) != 3 || leaders != 1 {
		t.Fatalf("replicas --json: %d rows with %d leaders, want 3 with 1", len(rows), leaders)
	}

	out := ok(t, "--addr", addr, "replicas", "--shard", "s1")
	body := section(t, out, "SHARD")
	if len(body) != 3 || len(body[0]) != 7 {
		t.Fatalf("replicas:\n%s\nwant 3 rows of SHARD REPLICA ADDR ROLE FORMAT APPLIED STATE", out)
	}

	follower := (c.StoreLeader(0) + 1) % 3
	c.KillStore(0, follower)
	out = ok(t, "--addr", addr, "--timeout", "2s", "replicas")
	down := rows[follower].Replica
	for _, r := range section(t, out, "SHARD") {
		if (r[1] == down) != (r[6] == "unreachable:") {
			t.Errorf("row %q after killing %s", r, down)
		}
	}

	for _, args := range [][]string{{"replicas", "--shard", "s9"}, {"replicas", "extra"}} {
		r := seqctl(t, append([]string{"--addr", addr}, args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, map[string]string{"s9": `no replica of shard "s9"`, "extra": "takes no arguments"}[args[len(args)-1]]) {
			t.Errorf("seqctl %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

// `seqctl replicas add` and `remove` replace a store replica: the new one
// shows as not a voter until it is added, and the removed one leaves the
// list.
func TestReplicasAddAndRemove(t *testing.T) {
	c := ownClusterShards(t, 1)
	addr := c.GatewayAddr()
	ok(t, "--addr", addr, "send", "--from", "1", "--to", "2", "hi")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, id, err := c.AddStoreReplica(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	state := func() map[string]string {
		var rows []replicaRow
		if err := json.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "replicas")), &rows); err != nil {
			t.Fatalf("replicas --json: %v", err)
		}
		out := map[string]string{}
		for _, r := range rows {
			out[r.Replica] = r.State
		}
		return out
	}
	// (The gateway's routing table catches up with the registration.)
	testwait.For(t, 10*time.Second, id+" to list as not a voter", func() bool {
		got := state()
		return len(got) == 4 && got[id] == "not a voter"
	})
	if out := ok(t, "--addr", addr, "replicas", "add", id); !strings.Contains(out, "store replica "+id+" is a voter of shard s1; voters now ") {
		t.Fatalf("replicas add: %q", out)
	}
	gone := fmt.Sprintf("s1-r%d", (c.StoreLeader(0)+1)%3+1)
	var resp struct {
		Shard  string   `json:"shard"`
		Voters []string `json:"voters"`
	}
	if err := json.Unmarshal([]byte(ok(t, "--addr", addr, "--json", "replicas", "remove", gone)), &resp); err != nil || resp.Shard != "s1" || len(resp.Voters) != 3 {
		t.Fatalf("replicas --json remove: %+v %v, want shard s1 and 3 voters", resp, err)
	}
	// A repeated remove (its answer lost) is harmless.
	if out := ok(t, "--addr", addr, "replicas", "remove", gone); !strings.Contains(out, "store replica "+gone+" removed from shard s1") {
		t.Fatalf("replicas remove again: %q", out)
	}
	testwait.For(t, 10*time.Second, "the replacement to list as ok and "+gone+" to leave", func() bool {
		got := state()
		_, there := got[gone]
		return len(got) == 3 && !there && got[id] == "ok"
	})

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"replicas", "add"}, "missing ID"},
		{[]string{"replicas", "add", "a", "b"}, "takes one ID"},
		{[]string{"replicas", "remove", "s1-r9"}, "no store replica s1-r9 is registered, nor a voter of any shard"},
		{[]string{"replicas", "add", gone}, "was removed from shard s1"},
	} {
		r := seqctl(t, append([]string{"--addr", addr}, tc.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("seqctl %v: exit %d, stderr %q, want %q", tc.args, r.code, r.stderr, tc.want)
		}
	}

	// A voter that never registered (its host never came up): listed from
	// the shard's Raft configuration, and removable by its id.
	leader := c.Store(0, c.StoreLeader(0)).Store()
	if err := leader.Raft().AddVoter("s1-r8", "127.0.0.1:1", 0, 10*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "s1-r8 to list as not registered", func() bool { return state()["s1-r8"] == "not registered" })
	if out := ok(t, "--addr", addr, "replicas"); !strings.Contains(out, "s1-r8") || !strings.Contains(out, "never registered") {
		t.Fatalf("replicas:\n%s\nwant s1-r8 as a voter that never registered", out)
	}
	if out := ok(t, "--addr", addr, "replicas", "remove", "s1-r8"); !strings.Contains(out, "store replica s1-r8 removed from shard s1") || strings.Contains(out, "s1-r8=") {
		t.Fatalf("replicas remove s1-r8: %q", out)
	}
	testwait.For(t, 10*time.Second, "s1-r8 to leave the list", func() bool { return len(state()) == 3 })
	if r := seqctl(t, "--addr", addr, "replicas", "add", "s1-r8"); r.code == 0 || !strings.Contains(r.stderr, "was removed from shard s1") {
		t.Errorf("replicas add s1-r8 after its removal: exit %d, stderr %q", r.code, r.stderr)
	}
}
