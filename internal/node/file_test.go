package node

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/arbiter"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seqd.toml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const fullConfig = `
id = "arb1"
cluster_id = "prod"
dc = "dc-east"
roles = ["arbiter", "allocsvr"]
data_dir = "/var/lib/seqd"
grpc_addr = "10.0.0.1:7400"
http_addr = "10.0.0.1:9090"
raft_addr = "10.0.0.1:7401"
gossip_addr = "10.0.0.1:7402"
advertise_host = "arb1.example"
arbiters = ["10.0.0.1:7400", "10.0.0.2:7400"]
drain_timeout = "45s"

[[peers]]
id = "arb1"
raft_addr = "10.0.0.1:7401"
grpc_addr = "10.0.0.1:7400"
gossip_addr = "10.0.0.1:7402"

[[peers]]
id = "arb2"
raft_addr = "10.0.0.2:7401"
grpc_addr = "10.0.0.2:7400"

[cluster]
section_size = 50000
slots = 128
step = 2000
lease = "4s"

[store]
max_group_size = 5000
dedup_ttl = "48h"
retention = "720h"
change_log_retention = "72h"

[raft]
heartbeat_timeout = "500ms"
election_timeout = "1m30s"
`

func TestParseFileFull(t *testing.T) {
	f, err := ParseFile(writeConfig(t, fullConfig))
	if err != nil {
		t.Fatalf("ParseFile: %v", err)
	}
	var cfg Config
	f.Apply(&cfg)
	want := Config{
		ID: "arb1", ClusterID: "prod", DC: "dc-east", Roles: []string{"arbiter", "allocsvr"}, DataDir: "/var/lib/seqd",
		GRPCAddr: "10.0.0.1:7400", HTTPAddr: "10.0.0.1:9090", RaftAddr: "10.0.0.1:7401", GossipAddr: "10.0.0.1:7402", AdvertiseHost: "arb1.example",
		Arbiters: []string{"10.0.0.1:7400", "10.0.0.2:7400"},
		Peers: []arbiter.Peer{
			{ID: "arb1", RaftAddr: "10.0.0.1:7401", GRPCAddr: "10.0.0.1:7400", GossipAddr: "10.0.0.1:7402"},
			{ID: "arb2", RaftAddr: "10.0.0.2:7401", GRPCAddr: "10.0.0.2:7400"},
		},
		SectionSize: 50000, NumSlots: 128, Step: 2000, Lease: 4 * time.Second,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 90 * time.Second,
		DrainTimeout: 45 * time.Second,
		MaxGroupSize: 5000, DedupTTL: 48 * time.Hour, Retention: 720 * time.Hour, ChangeLogRetention: 72 * time.Hour,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config after Apply:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestParseFileMinimal(t *testing.T) {
	f, err := ParseFile(writeConfig(t, "id = \"a\"\n# only a comment otherwise\n"))
	if err != nil {
		t.Fatalf("ParseFile: %v", err)
	}
	var cfg Config
	f.Apply(&cfg)
	if cfg.ID != "a" || cfg.Lease != 0 || cfg.SectionSize != 0 || len(cfg.Peers) != 0 || cfg.Join != "" || cfg.AdvertiseHost != "" {
		t.Fatalf("unset keys did not stay zero (defaults are applied later): %+v", cfg)
	}
}

func TestParseFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // all must appear in the error
	}{
		{"unknown top-level key", "id = \"a\"\ngrpc_adr = \"x:1\"\n", []string{"unknown keys", "grpc_adr"}},
		{"unknown nested key", "[cluster]\nslotz = 4\n", []string{"unknown keys", "cluster.slotz"}},
		{"unknown key in peers", "[[peers]]\nid = \"a\"\nraft = \"x\"\n", []string{"unknown keys", "peers.raft"}},
		{"several unknown keys", "foo = 1\nbar = 2\n", []string{"foo", "bar"}},
		{"malformed", "id = \"a\"\nroles = [\"arbiter\"\ndc = \"x\"\n", []string{"line 3"}},
		{"unterminated string", "id = \"a\"\n\ncluster_id = \"oops\n", []string{"line 3"}},
		{"bad duration", "[cluster]\nlease = \"4 seconds\"\n", []string{"line 2", `"4 seconds" is not a duration`}},
		{"negative duration", "drain_timeout = \"-1s\"\n", []string{`"-1s" is negative`}},
		{"wrong type", "[cluster]\nslots = \"many\"\n", []string{"line 2", "slots"}},
		// Given empty, advertise_host would read as not given.
		{"empty advertise_host", "advertise_host = \"\"\n", []string{"advertise_host is empty"}},
		{"advertise_host every interface", "advertise_host = \"0.0.0.0\"\n", []string{"advertise_host", "every interface"}},
		{"advertise_host ::", "advertise_host = \"::\"\n", []string{"advertise_host", "every interface"}},
		{"advertise_host with port", "advertise_host = \"10.0.0.1:7100\"\n", []string{"advertise_host", "has a port"}},
		{"advertise_host malformed", "advertise_host = \"arb 1\"\n", []string{"advertise_host", "neither an IP address nor a host name"}},
		{"advertise_host huge", "advertise_host = \"" + strings.Repeat("h", 1<<20) + "\"\n", []string{"advertise_host", "is 1048576 bytes"}},
		{"advertise_host not a string", "advertise_host = 7\n", []string{"line 1", "advertise_host"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			_, err := ParseFile(path)
			if err == nil {
				t.Fatal("ParseFile accepted a bad config")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	if _, err := ParseFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("ParseFile of a missing file: %v, want an error naming it", err)
	}
}

func TestParsePeer(t *testing.T) {
	tests := []struct {
		in      string
		want    arbiter.Peer
		wantErr bool
	}{
		{in: "arb1=10.0.0.1:7401,10.0.0.1:7400", want: arbiter.Peer{ID: "arb1", RaftAddr: "10.0.0.1:7401", GRPCAddr: "10.0.0.1:7400"}},
		{in: "arb2=r:1,g:2,m:3", want: arbiter.Peer{ID: "arb2", RaftAddr: "r:1", GRPCAddr: "g:2", GossipAddr: "m:3"}},
		{in: "a=[::1]:7401,[::1]:7400", want: arbiter.Peer{ID: "a", RaftAddr: "[::1]:7401", GRPCAddr: "[::1]:7400"}},
		{in: "", wantErr: true},
		{in: "arb1", wantErr: true},
		{in: "arb1=", wantErr: true},
		{in: "=r:1,g:2", wantErr: true},
		{in: "arb1=r:1", wantErr: true},
		{in: "arb1=r:1,", wantErr: true},
		{in: "arb1=,g:2", wantErr: true},
		{in: "arb1=r:1,g:2,m:3,x:4", wantErr: true},
		{in: "r:1,g:2", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParsePeer(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("ParsePeer(%q) = %+v, want an error", tc.in, got)
				continue
			}
			if !strings.Contains(err.Error(), "id=raft_addr,grpc_addr") || !strings.Contains(err.Error(), tc.in) {
				t.Errorf("ParsePeer(%q) error %q does not show the value and the expected form", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePeer(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParsePeer(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
