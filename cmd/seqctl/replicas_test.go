package main

import (
	"encoding/json"
	"strings"
	"testing"

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
