package datadir

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var testID = Identity{ClusterID: "c1", NodeID: "n1", Role: "arbiter"}

func claim(t *testing.T, dir string, id Identity) *Dir {
	t.Helper()
	d, err := Claim(dir, id)
	if err != nil {
		t.Fatalf("Claim(%s, %+v): %v", dir, id, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestClaimRecordsIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "data") // does not exist yet
	if !IsEmpty(dir) {
		t.Fatal("IsEmpty = false for a missing directory")
	}
	d := claim(t, dir, testID)
	if d.Path != dir {
		t.Errorf("Path = %q, want %q", d.Path, dir)
	}
	if IsEmpty(dir) {
		t.Fatal("IsEmpty = true after Claim")
	}
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if err != nil {
		t.Fatal(err)
	}
	var got Identity
	if err := json.Unmarshal(b, &got); err != nil || got != testID {
		t.Fatalf("identity file holds %+v (%v), want %+v", got, err, testID)
	}
	if _, err := os.Stat(filepath.Join(dir, identityFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary identity file left behind: %v", err)
	}
}

func TestClaimAgainAfterClose(t *testing.T) {
	dir := t.TempDir()
	d, err := Claim(dir, testID)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	claim(t, dir, testID) // same identity: accepted
}

func TestClaimForeign(t *testing.T) {
	tests := []struct {
		name  string
		other Identity
		// both values must appear in the message
		have, want string
	}{
		{"other cluster", Identity{ClusterID: "c2", NodeID: "n1", Role: "arbiter"}, `cluster "c1"`, `cluster "c2"`},
		{"other node", Identity{ClusterID: "c1", NodeID: "n2", Role: "arbiter"}, `node "n1"`, `node "n2"`},
		{"other role", Identity{ClusterID: "c1", NodeID: "n1", Role: "allocsvr"}, `role "arbiter"`, `role "allocsvr"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := Claim(dir, testID)
			if err != nil {
				t.Fatal(err)
			}
			d.Close()
			_, err = Claim(dir, tc.other)
			if !errors.Is(err, ErrForeign) {
				t.Fatalf("Claim with %+v: %v, want ErrForeign", tc.other, err)
			}
			for _, s := range []string{tc.have, tc.want, dir} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
			// The refusal released the lock and kept the identity.
			claim(t, dir, testID)
		})
	}
}

func TestClaimWhileLocked(t *testing.T) {
	dir := t.TempDir()
	first := claim(t, dir, testID)
	_, err := Claim(dir, testID)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Claim while locked: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
	// A foreign identity on a locked dir also reports the lock, not the identity.
	if _, err := Claim(dir, Identity{ClusterID: "x"}); !errors.Is(err, ErrLocked) {
		t.Fatalf("foreign Claim while locked: %v, want ErrLocked", err)
	}
	first.Close()
	claim(t, dir, testID)
}

func TestClaimCorruptIdentity(t *testing.T) {
	for name, content := range map[string]string{
		"truncated json": `{"cluster_id": "c1", "node_`,
		"not json":       "hello\n",
		"empty":          "",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, identityFile)
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Claim(dir, testID)
			if err == nil {
				t.Fatal("Claim accepted a corrupt identity file")
			}
			if errors.Is(err, ErrForeign) || errors.Is(err, ErrLocked) {
				t.Errorf("corrupt file reported as %v", err)
			}
			if !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), identityFile) {
				t.Errorf("error %q does not say the identity file is corrupt", err)
			}
			// Nothing was overwritten, and the lock was released.
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Errorf("identity file rewritten to %q", b)
			}
			if _, err := Claim(dir, testID); errors.Is(err, ErrLocked) {
				t.Error("a failed Claim kept the lock")
			}
		})
	}
}

func TestClaimBadPaths(t *testing.T) {
	if _, err := Claim("", testID); err == nil {
		t.Error("Claim accepted an empty path")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Claim(file, testID); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("Claim on a regular file: %v, want an error naming it", err)
	}
	// The identity path is a directory: unreadable, not "new".
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, identityFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Claim(dir, testID); err == nil {
		t.Error("Claim accepted a directory where the identity file belongs")
	}
}

func TestClaimStoreShard(t *testing.T) {
	s1 := Identity{ClusterID: "c1", NodeID: "r1", Shard: "s1"}
	dir := t.TempDir()
	d := claim(t, dir, s1)
	d.Close()
	s2 := s1
	s2.Shard = "s2"
	_, err := Claim(dir, s2)
	if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), `store shard "s1"`) || !strings.Contains(err.Error(), `store shard "s2"`) {
		t.Fatalf("Claim for another shard: %v, want ErrForeign naming both shards", err)
	}
	// A node without the store role on a store replica's directory.
	if _, err := Claim(dir, Identity{ClusterID: "c1", NodeID: "r1"}); !errors.Is(err, ErrForeign) {
		t.Fatalf("Claim without the shard: %v, want ErrForeign", err)
	}
	claim(t, dir, s1).Close()

	// A directory from a build that recorded no shard takes the first
	// one given, and keeps it.
	old := t.TempDir()
	claim(t, old, Identity{ClusterID: "c1", NodeID: "r1"}).Close()
	claim(t, old, s1).Close()
	if _, err := Claim(old, s2); !errors.Is(err, ErrForeign) {
		t.Fatalf("after the shard was recorded, Claim for another: %v, want ErrForeign", err)
	}
}

func TestClaimRefusesDataWithoutIdentity(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "store"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Claim(dir, testID)
	if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "store") || !strings.Contains(err.Error(), identityFile) {
		t.Fatalf("Claim of a directory with data and no identity: %v, want ErrForeign naming the data and the file", err)
	}
	if !IsEmpty(dir) {
		t.Fatal("the refused Claim wrote an identity")
	}
	// A fresh file system's lost+found is not data.
	fresh := t.TempDir()
	if err := os.Mkdir(filepath.Join(fresh, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	claim(t, fresh, testID)
}

func TestSpace(t *testing.T) {
	d := claim(t, t.TempDir(), testID)
	free, size, err := d.Space()
	if err != nil || size == 0 || free > size {
		t.Fatalf("Space() = %d free of %d, %v", free, size, err)
	}
}
